"""``llamarig lock INVENTORY [--update]``: resolve every rig and write ``rigs.lock`` beside the inventory.

Resolving needs no model data: refs through ``git ls-remote``, models through
the Hub's metadata, and (for rigs with GPUs) ``nvcc`` and the cards' compute
capability read on the rig over SSH, since they decide the build's CMake
arguments. Without ``--update`` whatever the lock already covers stays as it
is and only new or changed data is resolved; ``--update`` resolves every ref
and revision again (they move forward). Either way it prints what changed.
"""

from __future__ import annotations

import sys

from llamarig.release import lock
from llamarig.release import placements as rigplan
from llamarig.release.build import NVCC_LOOKUP, build_plan, cmake_args, cuda_architectures
from llamarig.lookups.gitref import GitRefError, resolve_ref
from llamarig.lookups.hub import HubError, resolve_model
from llamarig.hostdata.inventory import load_checked
from llamarig.lookups.rigssh import ssh_rig
from llamarig.lookups.secrets import SecretError, hub_token
from llamarig.release.unit import rig_units
from llamarig.hostdata.validate import format_problems

COMPUTE_CAPS = "nvidia-smi --query-gpu=compute_cap --format=csv,noheader"


class ResolveError(Exception):
    pass


def rig_gpu_build(host: str, doc: dict, data: dict) -> tuple[bool, list[str]]:
    """(CUDA build?, architectures) as the deploy's build task would decide them on the rig."""
    if not doc["gpus"]:
        return False, []
    try:
        with ssh_rig(host, data) as run:
            _, nvcc, _ = run(NVCC_LOOKUP, 30)
            status, caps, err = run(COMPUTE_CAPS, 30)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the rig is this rig's error
        raise ResolveError(f"{host}: could not reach the rig to read nvcc and the GPUs' compute capability, "
                           f"which decide its build: {type(exc).__name__}: {exc}") from None
    if not nvcc.strip():
        return False, []
    if status != 0:
        raise ResolveError(f"{host}: {COMPUTE_CAPS} failed on the rig: {err.strip()[-200:]}")
    archs = cuda_architectures(doc["build_cuda_architectures"], [c.strip() for c in caps.splitlines() if c.strip()])
    if not archs:
        raise ResolveError(f"{host}: build_cuda_architectures is auto but nvidia-smi reports no compute capability")
    return True, archs


def resolve_rig(host: str, doc: dict, data: dict, previous: dict | None, update: bool) -> dict:
    """The rig's lock entry: what ``previous`` covers is kept unless ``update``, the rest resolved."""
    keep_build = previous is not None and not update and not lock.build_uncovered(previous, doc)
    if keep_build:
        build = previous["build"]
        commit, cuda, archs = build["commit"], build["cuda"], build["cuda_architectures"]
    else:
        try:
            commit = resolve_ref(doc["build_git_url"], doc["build_ref"])
        except GitRefError as exc:
            raise ResolveError(f"{host}: build_ref {doc['build_ref']!r}: {exc}") from None
        cuda, archs = rig_gpu_build(host, doc, data)
    try:
        token = hub_token(doc)
    except SecretError as exc:
        raise ResolveError(f"{host}: {exc}") from None
    models = {}
    for name in lock.used_models(doc):
        model = doc["models"][name]
        if previous is not None and not update and not lock.model_uncovered(previous, name, model):
            models[name] = lock.resolved_model(previous, name, doc["hub_endpoint"])
            continue
        try:
            models[name] = resolve_model(name, model, doc["hub_endpoint"], token)
        except HubError as exc:
            raise ResolveError(f"{host}: {exc}") from None
    planned, _, issues = rigplan.planned_doc(host, doc, lambda m: models[m], check_explicit=False)
    if issues:
        raise ResolveError(format_problems(issues))
    plan = build_plan(planned, commit, cuda=cuda, archs=archs)
    units = rig_units(host, planned, models, plan["prefix"])
    return lock.rig_entry(planned, commit, cuda, archs, cmake_args(planned, cuda, archs), plan["key"], models, units)


def cmd_lock(args) -> int:
    loaded = load_checked(args.inventory)
    if loaded is None:
        return 1
    entries, docs = loaded
    path = lock.lock_path(args.inventory)
    try:
        old = lock.read(path)
    except lock.LockError as exc:
        if not args.update:
            print(f"llamarig lock: {exc}", file=sys.stderr)
            return 1
        old = None
    data = {e.name: e.data for e in entries}
    new, errors = {}, []
    for host, doc in docs.items():
        try:
            new[host] = resolve_rig(host, doc, data[host], (old or {}).get(host), args.update)
        except ResolveError as exc:
            errors.append(str(exc))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        print(f"llamarig lock: {len(errors)} rig(s) could not be resolved; {path} was left as it was", file=sys.stderr)
        return 1
    lines = lock.changes(old, new)
    if old is not None and not lines:
        print(f"llamarig lock: {path} is up to date ({len(new)} rig(s))")
        return 0
    lock.write(path, new, args.inventory)
    print("\n".join(lines))
    print(f"llamarig lock: wrote {path} ({len(new)} rig(s), {len(lines)} change(s))")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("lock", help=f"resolve every rig and write {lock.LOCK_NAME} beside the inventory")
    p.add_argument("inventory")
    p.add_argument("--update", action="store_true", help="resolve every ref and revision again (move forward)")
    p.set_defaults(func=cmd_lock)

