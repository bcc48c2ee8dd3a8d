"""Before any operation is queued: validate every host, resolve every rig, read what decides its build, release it.

pyinfra runs deploy.py once per host; the first call does this for every host of
the inventory (within ``--limit``) and caches the outcome, so bad data, a ref or
model that cannot be resolved, a placement that does not fit, or a rig that has
left its lock stops the whole run before anything is changed anywhere. Problems
are printed together, one line each, never as a traceback.

The rest is ``llamarig/``: ``resolve_rig`` (the resolver) and ``make_release``
(the build plan, every unit's text, argv and expectation). The only rig facts read
here are the ones a deploy never changes: ``nvcc`` and the GPUs' compute capability.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import click
from pyinfra import host, state
from pyinfra.context import ctx_host

from llamarig import layout
from llamarig.hostdata.rpc_links import users
from llamarig.hostdata.validate import Problem, format_problems, validate_all
from llamarig.release import lock
from llamarig.release.flags import placement_words
from llamarig.release.assemble import Deployment, facts_from_rig, frozen_release, make_release
from llamarig.release.resolve import LockUse, real_lookups, resolve_rig

from .gpu_facts import GpuState, NvccPath
from .tune_facts import TunesRunning


def inventory_file() -> str | None:
    """The inventory file of this pyinfra run, read from its command line as pyinfra's CLI parses it."""
    try:
        from pyinfra_cli.cli import cli
        ctx = cli.make_context("pyinfra", sys.argv[1:], resilient_parsing=True)
        inventory = ctx.params.get("inventory")
    except Exception:  # noqa: BLE001 - not run by pyinfra's CLI (the API, tests): no inventory file
        return None
    return inventory if inventory and os.path.isfile(inventory) else None


def read_lock() -> tuple[Path | None, dict | None]:
    """(the lock's path, its entries) when the inventory has a rigs.lock; LLAMARIG_LOCK names another file."""
    path = lock.lock_for(inventory_file())
    if path is None:
        return None, None
    return path, lock.read(path)


def rig_build_facts(target, doc: dict):
    """(RigFacts, None) from the rig's nvcc and compute capability, or (None, why they decide nothing).
    ``target`` may be another host than the one whose deploy code runs: its facts are read as its own."""
    with ctx_host.use(target):
        nvcc = target.get_fact(NvccPath) if doc["gpus"] else None
        caps = [g["compute_cap"] for g in (target.get_fact(GpuState) or [])] if nvcc else []
    return facts_from_rig(doc, nvcc, caps)


def deployment(name: str, doc: dict, lookups, locks, lock_file, target) -> tuple[Deployment | None, list[Problem]]:
    use = LockUse(lock_file, locks.get(name)) if locks is not None else None
    rig, problems = resolve_rig(name, doc, lookups, use)
    if rig is None:
        return None, problems
    seen, why = rig_build_facts(target, doc)
    if why:
        return None, [Problem(name, "build_cuda_architectures", doc["build_cuda_architectures"], why)]
    release, problems = frozen_release(rig, seen) if rig.frozen is not None else (make_release(rig, seen), [])
    if problems:
        return None, problems
    with ctx_host.use(target):
        tunes = target.get_fact(TunesRunning) or {}
    if tunes:
        return None, [Problem(name, "services", ", ".join(sorted(tunes)),
                              f"no `llamarig tune` running on the rig (one of {service} began {since}: a deploy "
                              f"would start the service under its candidates; wait for it, it puts the rig back, or "
                              f"stop {layout.tune_guard_unit(service)})") for service, since in sorted(tunes.items())]
    return Deployment(rig, release), []


_deployments: dict[int, dict[str, Deployment] | None] = {}
# pyinfra loads deploy.py for every host at once (gevent greenlets, threading is patched):
# one of them prepares all hosts, the others wait for it.
_lock = threading.Lock()


def rpc_limit_notes(docs: dict[str, dict], deployed: set[str]) -> list[str]:
    """What a run limited to some rigs cannot check of the RPC links between them and the others."""
    notes = []
    for host_name in sorted(deployed):
        for svc in docs[host_name]["services"]:
            outside = sorted({d["worker"] for d in svc.get("rpc_devices") or []} - deployed)
            if outside:
                notes.append(f"{host_name}: {svc['name']} uses the RPC servers of {', '.join(outside)}, outside --limit: "
                             f"they are not deployed by this run, only checked to be reachable before the unit changes")
        used_by = sorted({f"{h}/{s}" for h, s in users(docs, host_name) if h not in deployed})
        if used_by:
            notes.append(f"{host_name}: its RPC servers serve {', '.join(used_by)}, outside --limit: those services "
                         f"are not checked by this run (a restarted rpc-server drops their connection: deploy them "
                         f"too)")
    return notes


def _prepare_all() -> dict[str, Deployment]:
    hosts = list(state.inventory)
    groups: dict[str, list[str]] = {}
    for h in hosts:
        for g in getattr(h, "groups", None) or []:
            groups.setdefault(getattr(g, "name", g), []).append(h.name)
    docs, problems = validate_all([(h.name, h.data.dict()) for h in hosts], groups)
    out: dict[str, Deployment] = {}
    try:
        lock_file, locks = read_lock()
    except lock.LockError as exc:
        click.echo(f"--> llamarig: {exc}; no host was changed", err=True)
        raise SystemExit(2) from None
    if locks is not None:
        click.echo(f"--> llamarig: frozen by {lock_file}: locked commits, revisions and files only", err=True)
    lookups = real_lookups()
    if not problems:
        for h in hosts:
            if not state.is_host_in_limit(h) or h not in state.active_hosts:
                continue  # outside --limit, or unreachable (pyinfra reports it)
            found, issues = deployment(h.name, docs[h.name], lookups, locks, lock_file, h)
            problems += issues
            if found is None:
                continue
            out[h.name] = found
            for sp in found.rig.placements.values():
                if sp.auto:
                    args = found.release.units[layout.unit_name(sp.name)].argv
                    click.echo(f"--> llamarig: {h.name}: {sp.name}: planned " + " ".join(placement_words(args)),
                               err=True)
    if not problems:
        for line in rpc_limit_notes(docs, {h.name for h in hosts if state.is_host_in_limit(h)}):
            click.echo(f"--> llamarig: {line}", err=True)
    if problems:
        click.echo(format_problems(problems), err=True)
        click.echo(f"--> llamarig: {len(problems)} problem(s) in the host data; no host was changed", err=True)
        # SystemExit, not an exception: pyinfra prints a traceback for errors raised in deploy code.
        raise SystemExit(2)
    return out


def current() -> Deployment:
    """The current host's deployment (every host is prepared on first use)."""
    key = id(state)
    with _lock:
        if key not in _deployments:
            try:
                _deployments[key] = _prepare_all()
            except SystemExit:
                _deployments[key] = None
                raise
    found = _deployments[key]
    if found is None:  # another host's call already reported the problems
        raise SystemExit(2)
    return found[host.name]
