"""Validate every host, and resolve each rig's models and source refs, before any operation is queued.

pyinfra runs deploy.py once per host; the first call checks all hosts of the
inventory and caches the outcome, so a bad rig stops the whole run before
anything is changed anywhere. Problems are printed together, never as a traceback.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import click
from pyinfra import host, state

from llamarig.gitref import GitRefError, resolve_ref
from llamarig.hub import HubError, ResolvedModel, resolve_model
from llamarig.secrets import SecretError, api_key, hub_token
from llamarig.rigplan import planned_doc
from llamarig.validate import Problem, format_problems, validate_all


@dataclass
class RigPlan:
    doc: dict
    models: dict[str, ResolvedModel]
    commit: str
    hub_token: str | None = None
    api_keys: dict[str, str] = field(default_factory=dict)  # by service name; never printed


_plans: dict[int, dict[str, RigPlan] | None] = {}
# pyinfra loads deploy.py for every host at once (gevent greenlets, threading is patched):
# one of them plans all hosts, the others wait for it.
_lock = threading.Lock()


def _plan_all() -> dict[str, RigPlan]:
    hosts = list(state.inventory)
    docs, problems = validate_all([(h.name, h.data.dict()) for h in hosts])
    plans: dict[str, RigPlan] = {}
    if not problems:
        for name, doc in docs.items():
            if not state.is_host_in_limit(state.inventory.get_host(name)):
                continue
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
            plans[name] = RigPlan(doc, models, commit, token, keys)
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
