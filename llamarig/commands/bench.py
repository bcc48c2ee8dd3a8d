"""``llamarig bench INVENTORY``: measure every deployed service on its rig, keep the result, compare it.

Each service is measured through its running server, as deployed (no restart; its own
flags, fork and placement), by ``rig_programs/llamarig-bench.py`` sent inline over SSH
(the server may bind loopback only): prefill and decode by context depth, time to first
token, the draw of the service's GPUs, all repeated. The controller turns the raw
result into one row per depth (``llamarig.bench.summary``), adds the provenance it
knows from the release (fork, commit, build options, model repository, revision and
files), writes the JSON, the table and the charts beside the inventory
(``llamarig.bench.store``), and compares with the service's last result
(``llamarig.bench.compare``). Exit status: 0 when every service was measured (and,
with ``--compare``, none regressed), 1 otherwise, 2 for usage errors.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from llamarig import layout, programs
from llamarig.bench import charts, store, table
from llamarig.bench.compare import compare, provenance_changes
from llamarig.bench.energy import limits_seen
from llamarig.bench.summary import row_from_json, summarize
from llamarig.commands.releases import ReleaseError, read_locks, release_of
from llamarig.commands import verify
from llamarig.hostdata.inventory import load_checked
from llamarig.hostdata.validate import service_gpus
from llamarig.lookups.rigssh import ssh_rig

DEFAULT_DEPTHS = (512, 4096, 16384, 32768, 65536, 131072)
SCHEMA = 1


def lookups():
    """The resolver's lookups for bench: verify's (no git), and no API key read on the controller: the rig
    program reads a service's key from the root-only file the deploy installed there."""
    return dataclasses.replace(verify.lookups(), api_key=lambda service: None)


def depths_arg(text: str) -> list[int]:
    """``0,4096,16k`` -> [0, 4096, 16384]: prompt lengths in tokens (k: times 1024)."""
    import argparse
    depths = []
    for word in (w.strip().lower() for w in text.split(",")):
        if not word:
            continue
        scale = 1024 if word.endswith("k") else 1
        digits = word[:-1] if scale > 1 else word
        if not digits.isdigit():
            raise argparse.ArgumentTypeError(f"{word!r}: expected a context depth in tokens, such as 4096 or 16k")
        depths.append(int(digits) * scale)
    if not depths:
        raise argparse.ArgumentTypeError(f"{text!r}: expected one or more depths, such as 0,4096,16k")
    return sorted(set(depths))


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="measure each deployed service on its rig: prefill and decode by context "
                                         "depth, power, tokens per kWh; kept beside the inventory and compared")
    bench.add_argument("inventory")
    bench.add_argument("--limit", action="append", help="only this rig or group (repeatable, or comma-separated)")
    bench.add_argument("--service", action="append", help="only this service (repeatable)")
    bench.add_argument("--depths", type=depths_arg,
                       help="context depths in tokens (default: 512,4K,16K,32K,64K,128K up to the service's context)")
    bench.add_argument("--repetitions", type=int, default=3, help="measurements per depth (default 3)")
    bench.add_argument("--tokens", type=int, default=128, help="tokens generated per request (default 128)")
    bench.add_argument("--warmup", type=int, default=1, help="short requests before measuring (default 1)")
    bench.add_argument("--results", help=f"where results are kept (default: {store.DIR_NAME}/ beside the inventory)")
    bench.add_argument("--compare", action="store_true",
                       help="compare with the last result and exit 1 on a regression beyond the noise")
    bench.add_argument("--no-charts", action="store_true", help="write the JSON and the table only")
    bench.add_argument("--json", action="store_true", help="print the results as one JSON list")
    bench.set_defaults(func=cmd_bench)


def selected_hosts(entries, docs: dict, limits: list[str] | None) -> tuple[list[str], str | None]:
    if not limits:
        return list(docs), None
    wanted = [w for item in limits for w in item.split(",") if w]
    out = []
    for want in wanted:
        hosts = [e.name for e in entries if e.name == want or want in e.groups]
        if not hosts:
            groups = sorted({g for e in entries for g in e.groups})
            return [], (f"--limit {want}: no such rig or group (rigs: {', '.join(docs)}; "
                        f"groups: {', '.join(groups) or 'none'})")
        out += [h for h in hosts if h not in out]
    return out, None


def bench_spec(doc: dict, svc: dict, expect: dict, args) -> dict:
    """What the rig program measures. Without --depths, the defaults that fit the slot's context (the rig
    program reads it from the server) are measured, and the others are left out without a word."""
    return {"url": expect["url"], "unit": expect["unit"], "api_key_file": expect["api_key_file"],
            "gpus": service_gpus(doc, svc), "depths": args.depths or list(DEFAULT_DEPTHS),
            "fit_depths": args.depths is None,
            "repetitions": args.repetitions, "tokens": args.tokens, "warmup": args.warmup,
            "build_record": layout.BUILD_RECORD, "manifest": layout.MANIFEST}


def command(spec: dict) -> str:
    words = ["python3", "-c", programs.source(programs.BENCH), "--spec-json", json.dumps(spec, sort_keys=True)]
    return " ".join(shlex.quote(str(w)) for w in words)


def release_provenance(deployment, unit) -> dict:
    """What the controller knows of what runs: from the release (exact under rigs.lock, else a preview)."""
    rig, release = deployment.rig, deployment.release
    svc = next(s for s in rig.doc["services"] if s["name"] == unit.service)
    model = rig.models[svc["model"]]
    return {
        "exact": deployment.exact, "preview": list(release.preview),
        "fork": rig.doc["build_fork"], "commit": rig.commit, "build_key": release.build["key"],
        "cmake_args": list(release.build["cmake_args"]), "targets": list(release.build["targets"]),
        "argv": list(unit.argv), "unit_digest": unit.digest,
        "model": {"name": svc["model"], "repo": model.repo, "revision": model.revision, "commit": model.commit,
                  "file": model.file, "files": sorted([f.path, f.size, f.sha256] for f in model.files)},
        "declared_power_limits_w": _declared_limits(rig.doc, service_gpus(rig.doc, svc)),
    }


def _declared_limits(doc: dict, gpus: list[int]) -> dict:
    from llamarig.release.power import declared_limits
    limits = declared_limits(doc)
    return {str(i): limits.get(i) for i in gpus}


def matches_release(raw_argv: list[str] | None, release_argv: list[str]) -> bool | None:
    """Whether the server runs the release's flags. The rig's argv[0] is the binary; a secret is masked there;
    a word with a systemd specifier (``%d/api-key``) is expanded there, so it is not compared."""
    if not raw_argv:
        return None
    running = raw_argv[1:]
    return len(running) == len(release_argv) and all(
        a == b or a == "***" or "%" in b for a, b in zip(running, release_argv))


def build_result(host: str, unit, deployment, raw: dict, summary: list, started: float) -> dict:
    limits = limits_seen(raw.get("power"))
    release = release_provenance(deployment, unit)
    server = raw["server"]
    return {
        "schema": SCHEMA, "rig": host, "service": unit.service, "time": raw["time"],
        "controller_s": round(time.time() - started, 3),
        "spec": raw["spec"], "n_ctx_slot": raw["n_ctx_slot"], "total_slots": raw["total_slots"],
        "busy_check": raw["busy_check"], "contended_runs": raw["contended_runs"], "skipped": raw["skipped"],
        "summary": [r.to_json() for r in summary],
        "power_limits_w": {str(x["gpu"]): x["power_limits_w"] for x in limits} or None,
        "gpu_state": limits,
        "server": server, "release": release,
        "runs_release_flags": matches_release(server.get("argv"), release["argv"]),
        "rig_facts": raw["rig"], "timing": raw["timing"], "runs": raw["runs"], "power": raw["power"],
    }


def notes_for(result: dict) -> list[str]:
    notes = []
    server, release = result["server"], result["release"]
    build = server.get("build") or {}
    notes.append(f"{release['fork']} {str(build.get('commit') or release['commit'])[:12]}, "
                 f"{result['spec']['repetitions']} repetition(s), {result['spec']['tokens']} tokens generated, "
                 f"slot context {result['n_ctx_slot']}")
    gpus = result["rig_facts"].get("gpus") or []
    if gpus:
        limits = ", ".join(f"GPU {g['index']} {g['name']} at {g['power.limit']:g} W" for g in gpus
                           if g.get("power.limit") is not None)
        notes.append(f"{limits}; driver {result['rig_facts'].get('driver_version')}, "
                     f"CUDA {result['rig_facts'].get('cuda_version')}")
    else:
        notes.append("no GPU: power and tokens/kWh are not measured (the CPU's draw is not read)")
    if result["runs_release_flags"] is False:
        notes.append("the server's flags differ from the inventory's release: it runs what was deployed earlier "
                     "(deploy, then bench again to measure the declared flags)")
    for skip in result["skipped"]:
        notes.append(f"depth {skip['depth']} skipped: {skip['why']}")
    bad = sum(r["not_prefilled"] for r in result["summary"])
    if bad:
        notes.append(f"{bad} run(s) processed fewer prompt tokens than sent (a cache was used): prefill figures "
                     "are not a full prefill")
    if result["contended_runs"]:
        notes.append(f"{result['contended_runs']} run(s) overlapped another request: those figures are contended")
    if not result["busy_check"] == "slots":
        notes.append(f"busy check {result['busy_check']}")
    return notes


def bench_service(host: str, unit, deployment, run, args, root: Path) -> tuple[dict | None, str | None, list]:
    """(result, error, changes) of one service."""
    spec = bench_spec(deployment.doc, next(s for s in deployment.doc["services"] if s["name"] == unit.service),
                      unit.expect, args)
    started = time.time()
    print(f"{host} {unit.service}: measuring {unit.expect['url']} at depths "
          f"{', '.join(map(str, spec['depths']))}, {spec['repetitions']} repetition(s)", file=sys.stderr, flush=True)

    def progress(line: str) -> None:
        if line.startswith("bench: "):
            print(f"{host} {unit.service}: {line[7:]}", file=sys.stderr, flush=True)

    timeout = 3600 + 60  # the longest one request may be silent (a 128K prefill on a slow rig)
    status, out, err = run(command(spec), timeout, on_line=progress)
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    try:
        raw = json.loads(lines[-1])
    except (IndexError, ValueError):
        why = (err or out).strip()[-400:]
        return None, f"{host} {unit.service}: the bench program failed on the rig (exit {status}): {why}", []
    if not raw.get("ok"):
        return None, f"{host} {unit.service}: not measured: {raw.get('error')}", []
    summary = summarize(raw)
    result = build_result(host, unit, deployment, raw, summary, started)
    directory = store.service_dir(root, host, unit.service)
    name = store.stamp()
    earlier = store.previous(directory, before=name)
    changes = []
    compared = None
    if earlier is not None:
        changes = compare([row_from_json(r) for r in earlier[1]["summary"]], summary)
        compared = {"with": earlier[0].name, "changes": [c.to_json() for c in changes],
                    "provenance_changes": provenance_changes(earlier[1], result)}
    result["compared"] = compared
    title = f"{host} {unit.service} ({result['time']})"
    text = table.render(title, summary, notes_for(result))
    if compared:
        text += f"  compared with {compared['with']}:\n"
        text += "".join(f"    {c.line()}\n" for c in changes if c.figure in ("prefill_tps", "decode_tps")) or \
            "    no depth in common\n"
        text += "".join(f"    changed: {p}\n" for p in compared["provenance_changes"])
    path, _ = store.save(directory, name, result, text)
    files = [path]
    if not args.no_charts:
        files += charts.write(summary, title, directory / f"{name}-speed.png", directory / f"{name}-energy.png")
    result["files"] = [str(f) for f in files]
    if not args.json:
        print(text + f"  written: {', '.join(str(f) for f in files)}", flush=True)
    return result, None, changes


def cmd_bench(args) -> int:
    if not os.path.isfile(args.inventory):
        print(f"llamarig bench: {args.inventory}: no such inventory file", file=sys.stderr)
        return 2
    if args.repetitions < 1 or args.tokens < 1 or args.warmup < 0:
        print("llamarig bench: --repetitions and --tokens must be 1 or more, --warmup 0 or more", file=sys.stderr)
        return 2
    loaded = load_checked(args.inventory)
    if loaded is None:
        return 1
    entries, docs = loaded
    hosts, problem = selected_hosts(entries, docs, args.limit)
    if problem:
        print(f"llamarig bench: {problem}", file=sys.stderr)
        return 2
    data = {e.name: e.data for e in entries}
    root = store.results_root(args.inventory, args.results)
    try:
        locks = read_locks(args.inventory)
    except ReleaseError as exc:
        print(f"llamarig bench: {exc}", file=sys.stderr)
        return 1
    results, errors, regressed = [], [], []
    wanted = set(args.service or [])
    matched = set()
    for host in hosts:
        units = [u for u in _units(host, docs[host], locks, errors) if not wanted or u[1].service in wanted]
        matched |= {u[1].service for u in units}
        if not units:
            continue
        deployment = units[0][0]
        with ExitStack() as stack:
            try:
                run = stack.enter_context(ssh_rig(host, data[host]))
            except Exception as exc:  # noqa: BLE001 - any failure to reach the rig is that rig's error
                errors.append(f"{host}: unreachable: {type(exc).__name__}: {exc}")
                continue
            for _, unit in units:
                result, error, changes = bench_service(host, unit, deployment, run, args, root)
                if error:
                    errors.append(error)
                    continue
                results.append(result)
                regressed += [f"{host} {unit.service} {c.line()}" for c in changes if c.verdict == "regression"]
    missing = wanted - matched
    if missing:
        errors.append(f"no service {', '.join(sorted(missing))} on {', '.join(hosts)}")
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k not in ("runs", "power")} for r in results], indent=1))
    for error in errors:
        print(f"llamarig bench: {error}", file=sys.stderr)
    if args.compare:
        if not any(r["compared"] for r in results):
            print("llamarig bench: no earlier result to compare with", file=sys.stderr)
        for line in regressed:
            print(f"llamarig bench: REGRESSION {line}", file=sys.stderr)
    return 1 if errors or (args.compare and regressed) else 0


def _units(host: str, doc: dict, locks, errors: list[str]):
    if not doc["services"]:
        return []
    try:
        deployment = release_of(host, doc, locks, lookups())
    except ReleaseError as exc:
        errors.append(str(exc))
        return []
    return [(deployment, u) for u in deployment.release.units.values()]
