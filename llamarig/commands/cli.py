"""The ``llamarig`` command: offline checks and previews of an inventory.

No rig is contacted. ``check`` validates every host; ``render`` prints the
unit each service gets (exactly, under rigs.lock; else a labelled preview);
``plan`` plans a placement for a model or a service. Errors are printed, never raised.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys

from llamarig import layout
from llamarig.lookups.secrets import SecretError
from llamarig.hostdata.inventory import InventoryError, load_inventory
from llamarig.commands import bench as benchcli
from llamarig.commands import lock as lockcli
from llamarig.commands import tune as tunecli
from llamarig.commands.releases import ReleaseError, read_locks, release_of
from llamarig.release import rpc
from llamarig.release.flags import server_args
from llamarig.release.placements import FORK_DEFAULTS, checkable, effective_ubatch
from llamarig.release.resolve import LockUse, lock_coverage, read_secrets, real_lookups
from llamarig.planner.architectures import ArchitectureError
from llamarig.planner.gguf import GgufError, read_model
from llamarig.planner.memory import GiB, MiB, Settings
from llamarig.planner.plan import describe, plan
from llamarig.hostdata.schema import CACHE_TYPES, _cache_type as _coerce_cache
from llamarig.hostdata.rpc_links import groups_of
from llamarig.hostdata.validate import format_problems, validate_all


def _load(inventory: str):
    entries = load_inventory(inventory)
    return validate_all([(e.name, e.data) for e in entries], groups_of(entries))


def cmd_check(args) -> int:
    docs, problems = _load(args.inventory)
    lookups = real_lookups()
    for host, doc in docs.items():  # the controller's own secrets are known offline too (never shown)
        problems += read_secrets(host, doc, lookups)[2]
    try:
        path, locks = read_locks(args.inventory)
    except ReleaseError as exc:
        print(f"llamarig: {exc}", file=sys.stderr)
        return 1
    if locks is not None:  # a frozen inventory: what the lock does not cover would stop the deploy
        for host, doc in docs.items():
            problems += lock_coverage(host, doc, LockUse(path, locks.get(host)))
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return 1
    services = sum(len(doc["services"]) for doc in docs.values())
    print(f"llamarig: {len(docs)} rig(s), {services} service(s): data is valid")
    return 0


def cmd_render(args) -> int:
    docs, problems = _load(args.inventory)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return 1
    hosts = [args.host] if args.host else list(docs)
    unknown = [h for h in hosts if h not in docs]
    if unknown:
        print(f"llamarig: no host {unknown[0]} in {args.inventory} (hosts: {', '.join(docs)})", file=sys.stderr)
        return 1
    shown = 0
    try:
        locks = read_locks(args.inventory)
        for host in hosts:
            found = release_of(host, docs[host], locks)
            missing = sorted(name for name, m in found.rig.models.items() if not m.file)
            if missing:
                print(f"llamarig: {host}: models.{missing[0]}.file is unset and the Hub could not say which GGUF "
                      f"to run ({'; '.join(found.release.preview)}); declare it or make the Hub reachable",
                      file=sys.stderr)
                return 1
            for u in found.release.units.values():
                if args.service and u.service != args.service:
                    continue
                how = (f"exactly what a deploy installs ({u.digest}, as rigs.lock records)" if found.exact else
                       "PREVIEW, not byte for byte what a deploy installs: " + "; ".join(found.release.preview)
                       + "; `llamarig lock` makes it exact")
                print(f"# --- {host}: {u.path}: {how}")
                print(u.text)
                shown += 1
    except ReleaseError as exc:
        print(exc, file=sys.stderr)
        return 1
    if shown == 0:
        print("llamarig: no service matches", file=sys.stderr)
        return 1
    return 0


def _cache_type(text: str) -> str:
    value = _coerce_cache(text)
    if value not in CACHE_TYPES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(CACHE_TYPES)}, got {text!r}")
    return value


def _gib_list(text: str) -> list[int]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected GiB per GPU such as 24,24,24, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive GiB per GPU, got {text!r}")
    return [int(v * GiB) for v in values]


def _print_plan(p, args_list: list[str], as_json: bool) -> int:
    if as_json:
        print(json.dumps(p.to_json(args_list), indent=2))
    else:
        print(describe(p))
        print("llama-server " + " ".join(shlex.quote(a) for a in args_list))
    return 0 if p.fits else 1


def cmd_plan(args) -> int:
    if args.target.endswith(".py") and os.path.isfile(args.target):
        return _plan_inventory(args)
    if args.gpus is None:
        print("llamarig plan: --gpus is needed with a model (GiB per GPU, such as 24,24,24,24)", file=sys.stderr)
        return 2
    try:
        model = read_model(args.target, revision=args.revision, endpoint=args.endpoint)
    except GgufError as exc:
        print(f"llamarig plan: {exc}", file=sys.stderr)
        return 2
    # a ubatch over the default batch comes with a batch as large (else the server runs the smaller one)
    batch = args.batch or (args.ubatch if args.ubatch and args.ubatch > FORK_DEFAULTS["batch"] else None)
    service = {"ctx_size": args.ctx or model.n_ctx_train, "cache_type_k": args.cache_type_k or args.cache_type,
               "cache_type_v": args.cache_type_v or args.cache_type, "parallel": args.parallel,
               "ubatch_size": args.ubatch, "batch_size": batch, "flash_attn": "off" if args.no_flash_attn else None}
    s = Settings(fork=args.fork, ctx=service["ctx_size"], parallel=args.parallel, cache_k=service["cache_type_k"],
                 cache_v=service["cache_type_v"], ubatch=effective_ubatch(service), flash_attn=not args.no_flash_attn)
    ram = int(args.ram * GiB) if args.ram else None
    try:
        p = plan(model, args.gpus, ram, s, args.margin_mib * MiB)
    except ArchitectureError as exc:
        print(f"llamarig plan: {args.target}: {exc}", file=sys.stderr)
        return 1
    # The service these settings declare, rendered by the same function as every unit's flags.
    argv = server_args(service, args.target, args.fork, p.flags)
    return _print_plan(p, argv[2:], args.json)  # without --model: the file is the command's argument


def _plan_inventory(args) -> int:
    docs, problems = _load(args.target)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return 1
    if not args.host or args.host not in docs:
        print(f"llamarig plan: --host names one of {', '.join(docs)}", file=sys.stderr)
        return 2
    doc = docs[args.host]
    names = [s["name"] for s in doc["services"]]
    if args.service not in names:
        print(f"llamarig plan: --service names one of {', '.join(names)} on {args.host}", file=sys.stderr)
        return 2
    service = next(s for s in doc["services"] if s["name"] == args.service)
    if not checkable(doc, service):
        print(f"llamarig plan: {args.host}: {args.service} leaves its placement to llama.cpp "
              f"(split mode {service['split_mode']}, or no placement flag and --fit on)", file=sys.stderr)
        return 2
    try:
        found = release_of(args.host, doc, read_locks(args.target), check_explicit=True)
    except ReleaseError as exc:
        print(f"llamarig plan: {exc}", file=sys.stderr)
        return 2
    unit = found.release.units[layout.unit_name(args.service)]
    shown = copy.deepcopy(found.rig.placements[args.service].plan)
    for row in shown.devices:  # a worker's devices as llama.cpp names them (RPC0[HOST:PORT]), rpc.py
        row.name = rpc.to_llama(row.name, service)
    shown.layers = [rpc.to_llama(d, service) for d in shown.layers]
    return _print_plan(shown, list(unit.argv), args.json)


def cmd_verify(args) -> int:
    from llamarig.commands.verify import cmd_verify as verify
    return verify(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llamarig", description="llamarig: declared llama.cpp rigs")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate an inventory and its group data")
    check.add_argument("inventory")
    check.set_defaults(func=cmd_check)
    render = sub.add_parser("render", help="print the systemd unit of each service")
    render.add_argument("inventory")
    render.add_argument("--host")
    render.add_argument("--service")
    render.set_defaults(func=cmd_render)
    pl = sub.add_parser("plan", help="plan or check a placement: MODEL (a GGUF, or hf:OWNER/REPO/PATH) "
                                     "with --gpus, or INVENTORY.py with --host and --service")
    pl.add_argument("target", help="a GGUF file (any part of a split set), hf:OWNER/REPO/PATH, or an inventory")
    pl.add_argument("--gpus", type=_gib_list, help="GiB of each GPU, such as 24,24,24,24")
    pl.add_argument("--ram", type=float, help="system RAM in GiB for weights kept off the GPUs")
    pl.add_argument("--ctx", type=int, help="context size (default: the model's trained context)")
    pl.add_argument("--cache-type", default="f16", type=_cache_type, help="K and V cache type (default f16)")
    pl.add_argument("--cache-type-k", type=_cache_type)
    pl.add_argument("--cache-type-v", type=_cache_type)
    pl.add_argument("--parallel", type=int, help="server slots (--parallel)")
    pl.add_argument("--ubatch", type=int, help="--ubatch-size (default: the fork's, 512)")
    pl.add_argument("--batch", type=int, help="--batch-size (default: the fork's, 2048, or the ubatch when larger)")
    pl.add_argument("--no-flash-attn", action="store_true")
    pl.add_argument("--fork", default="llama.cpp", choices=["llama.cpp", "ik_llama.cpp"])
    pl.add_argument("--revision", help="Hub revision of an hf: model")
    pl.add_argument("--endpoint", help="Hub endpoint (default $HF_ENDPOINT or https://huggingface.co)")
    pl.add_argument("--margin-mib", type=int, default=1024, help="MiB left free on every GPU (default 1024)")
    pl.add_argument("--host")
    pl.add_argument("--service")
    pl.add_argument("--json", action="store_true", help="one JSON object: fits, reason, devices, host, args")
    pl.set_defaults(func=cmd_plan)
    lockcli.add_parser(sub)
    benchcli.add_parser(sub)
    tunecli.add_parser(sub)
    ver = sub.add_parser("verify", help="check every service on its rig over SSH: unit, /health, /props, exposure")
    ver.add_argument("inventory")
    ver.add_argument("--host", action="append", help="only this rig (repeatable)")
    ver.add_argument("--inference", action="store_true", help="also time one completion per service")
    ver.add_argument("--json", action="store_true", help="one JSON list of {host, service, check, grade, ok, value, expected}")
    ver.set_defaults(func=cmd_verify)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InventoryError as exc:
        print(f"llamarig: {exc}", file=sys.stderr)
        return 2
    except SecretError as exc:
        print(f"llamarig: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
