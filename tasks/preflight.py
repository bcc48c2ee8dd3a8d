"""Validate every host, and resolve each rig's models and source refs, before any operation is queued.

When the inventory has a ``rigs.lock`` (``llamarig/lock.py``), nothing is resolved:
each rig gets its locked commit and files, and data the lock does not cover, or a
unit that would render differently from the locked one, is a problem like bad data.

pyinfra runs deploy.py once per host; the first call checks all hosts of the
inventory and caches the outcome, so a bad rig stops the whole run before
anything is changed anywhere. Problems are printed together, never as a traceback.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import click
from pyinfra import host, state

from llamarig import layout
from llamarig.release import lock
from llamarig.release.build import build_plan
from llamarig.lookups.gitref import GitRefError, resolve_ref
from llamarig.lookups.hub import HubError, ResolvedModel, resolve_model
from llamarig.lookups.secrets import SecretError, api_key, hub_token
from llamarig.release.placements import planned_doc
from llamarig.release.unit import rig_units
from llamarig.hostdata.validate import Problem, format_problems, validate_all


@dataclass
class RigPlan:
    doc: dict
    models: dict[str, ResolvedModel]
    commit: str
    hub_token: str | None = None
    api_keys: dict[str, str] = field(default_factory=dict)  # by service name; never printed
    locked_build: dict | None = None  # the rig's rigs.lock build entry (cuda, cuda_architectures, key), if locked


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
    named = os.environ.get("LLAMARIG_LOCK")
    inventory = inventory_file()
    path = Path(named) if named else lock.lock_path(inventory) if inventory else None
    if path is None:
        return None, None
    return path, lock.read(path)


def _locked(name: str, doc: dict, entry: dict | None, path: Path, problems: list) -> bool:
    """Whether the rig's lock entry covers its data; each gap is a problem naming the key."""
    if entry is None:
        problems.append(Problem(name, "rigs.lock", str(path), "an entry for this rig (run `llamarig lock` to add it)"))
        return False
    missing = lock.uncovered(entry, doc)
    for miss in missing:
        problems.append(Problem(name, miss.key, miss.value, f"what {path.name} was locked from, {miss.locked!r} "
                                                            f"(run `llamarig lock --update` to lock the new data)"))
    return not missing


def _units_match_lock(name: str, doc: dict, models: dict, entry: dict, path: Path, problems: list) -> None:
    key = entry["build"]["key"]
    plan = build_plan(doc, entry["build"]["commit"], cuda=entry["build"]["cuda"], archs=entry["build"]["cuda_architectures"])
    if plan["key"] != key:
        problems.append(Problem(name, "build_cmake_options", doc["build_cmake_options"],
                                f"the build {path.name} locked, {key} (run `llamarig lock --update`)"))
        return
    units = rig_units(name, doc, models, layout.prefix_dir(doc["build_root"], key))
    for unit in sorted(set(units) | set(entry["units"])):
        if unit not in units or lock.unit_digest(units[unit]) != entry["units"].get(unit):
            what = "no longer declared" if unit not in units else "rendered differently" if unit in entry["units"] \
                else "not in the lock"
            problems.append(Problem(name, "services", unit, f"the units {path.name} locked ({unit} is {what}; "
                                                            f"run `llamarig lock` to lock the change)"))


_plans: dict[int, dict[str, RigPlan] | None] = {}
# pyinfra loads deploy.py for every host at once (gevent greenlets, threading is patched):
# one of them plans all hosts, the others wait for it.
_lock = threading.Lock()


def _plan_all() -> dict[str, RigPlan]:
    hosts = list(state.inventory)
    docs, problems = validate_all([(h.name, h.data.dict()) for h in hosts])
    plans: dict[str, RigPlan] = {}
    try:
        lock_file, locks = read_lock()
    except lock.LockError as exc:
        click.echo(f"--> llamarig: {exc}; no host was changed", err=True)
        raise SystemExit(2) from None
    if locks is not None:
        click.echo(f"--> llamarig: frozen by {lock_file}: locked commits, revisions and files only", err=True)
    if not problems:
        for name, doc in docs.items():
            if not state.is_host_in_limit(state.inventory.get_host(name)):
                continue
            entry = locks.get(name) if locks is not None else None
            if locks is not None:
                if not _locked(name, doc, entry, lock_file, problems):
                    continue
                commit = entry["build"]["commit"]
            else:
                try:
                    commit = resolve_ref(doc["build_git_url"], doc["build_ref"])
                except GitRefError as exc:
                    problems.append(Problem(name, "build_ref", doc["build_ref"], f"a ref of {doc['build_git_url']} ({exc})"))
                    continue
            models = {}
            try:
                token = hub_token(doc)
            except SecretError as exc:
                problems.append(Problem(name, "hub_token_file" if doc["hub_token_file"] else "hub_token_env",
                                        doc["hub_token_file"] or doc["hub_token_env"], f"a readable Hub token ({exc})"))
                continue
            keys = {}
            for i, svc in enumerate(doc["services"]):
                try:
                    key = api_key(svc)
                except SecretError as exc:
                    which = "api_key_file" if svc["api_key_file"] else "api_key_env"
                    problems.append(Problem(name, f"services[{i}].{which}", svc[which], f"a readable API key ({exc})"))
                    continue
                if key:
                    keys[svc["name"]] = key
            used = {svc["model"] for svc in doc["services"]}
            for model_name in sorted(used):
                if entry is not None:
                    models[model_name] = lock.resolved_model(entry, model_name, doc["hub_endpoint"])
                    continue
                try:
                    models[model_name] = resolve_model(model_name, doc["models"][model_name], doc["hub_endpoint"], token)
                except HubError as exc:
                    problems.append(Problem(name, f"models.{model_name}", doc["models"][model_name]["repo"],
                                            f"a model the Hub serves ({exc})"))
            if any(m not in models for m in used):
                continue
            doc, placed, placement_issues = planned_doc(name, doc, lambda m: models[m])
            problems += placement_issues
            for sp in placed.values():
                if sp.auto and sp.plan.fits:
                    click.echo(f"--> llamarig: {name}: {sp.name}: planned " + " ".join(sp.plan.placement_args()), err=True)
            if entry is not None and not placement_issues:
                _units_match_lock(name, doc, models, entry, lock_file, problems)
            plans[name] = RigPlan(doc, models, commit, token, keys, entry["build"] if entry else None)
    if problems:
        click.echo(format_problems(problems), err=True)
        click.echo(f"--> llamarig: {len(problems)} problem(s) in the host data; no host was changed", err=True)
        # SystemExit, not an exception: pyinfra prints a traceback for errors raised in deploy code.
        raise SystemExit(2)
    return plans


def rig_plan() -> RigPlan:
    """The validated, resolved plan of the current host (all hosts are checked on first use)."""
    key = id(state)
    with _lock:
        if key not in _plans:
            try:
                _plans[key] = _plan_all()
            except SystemExit:
                _plans[key] = None
                raise
    plans = _plans[key]
    if plans is None:  # another host's call already reported the problems
        raise SystemExit(2)
    return plans[host.name]
