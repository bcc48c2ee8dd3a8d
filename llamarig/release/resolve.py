"""The one resolver: validated host data in, a resolved rig out.

``resolve_rig(host, doc, lookups, lock)`` turns one rig's validated data into what
it will run, everything the controller can know before touching the rig: the
fork's commit, each used model's revision and files (sizes, sha256), the secrets
(read, never shown), and the placement of every service, planned (``placement:
auto``) or checked (hand-written), kept beside the declared service in
``ResolvedRig.placements``, never written into it.

Pure, given its lookups (``Lookups``: git refs, Hub metadata, GGUF headers,
secret readers): the deploy, ``llamarig lock``, ``render``, ``plan`` and
``verify`` pass the real ones (``real_lookups``), tests pass their own. What it
cannot resolve is a ``Problem`` naming the host and the key, never an exception.

A rig's lock entry (``rigs.lock``) is used three ways (``LockUse``):
``frozen`` (a deploy, ``render``: the entry must cover the data; its commit and files
are used and nothing is looked up), ``reuse`` (``llamarig lock``: what the entry
covers is kept, the rest resolved), or none (``llamarig lock --update``, no lock).
With ``preview`` (``render``/``verify`` without a lock) a ref or revision that cannot
be looked up keeps its declared name and the result says so (``ResolvedRig.notes``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from llamarig.hostdata.validate import Problem
from llamarig.lookups.gitref import GitRefError
from llamarig.lookups.hub import HubError, ResolvedModel
from llamarig.lookups.secrets import SecretError
from llamarig.planner.gguf import GgufError, ModelInfo
from llamarig.release import lock as lockfile
from llamarig.planner import architectures
from llamarig.planner.architectures import ArchitectureError
from llamarig.release.placements import ServicePlan, headers_needed, placement_problems, plan_rig


@dataclass(frozen=True)
class Lookups:
    """What the resolver may ask outside the host data. Each raises its module's error."""

    git_ref: Callable[[str, str], str]                                  # (url, ref) -> commit; GitRefError
    hub_model: Callable[[str, dict, str, str | None], ResolvedModel]    # (name, model, endpoint, token); HubError
    headers: Callable[[ResolvedModel, str | None], ModelInfo]           # (resolved, token); HubError, GgufError
    hub_token: Callable[[dict], str | None]                             # (doc); SecretError
    api_key: Callable[[dict], str | None]                               # (service); SecretError


def real_lookups() -> Lookups:
    """The lookups of a real run: git ls-remote, the Hub's API and range requests, the controller's secrets."""
    from llamarig.lookups.gitref import resolve_ref
    from llamarig.lookups.hub import resolve_model
    from llamarig.lookups.secrets import api_key, hub_token
    from llamarig.planner.gguf import read_hub_model

    def headers(resolved: ResolvedModel, token: str | None) -> ModelInfo:
        return read_hub_model(resolved.repo, resolved.file, resolved.commit, resolved.endpoint, token)

    return Lookups(git_ref=resolve_ref, hub_model=resolve_model, headers=headers, hub_token=hub_token,
                   api_key=api_key)


@dataclass(frozen=True)
class LockUse:
    """How a rig's lock entry is used: ``frozen`` (must cover the data) or ``reuse`` (keep what it covers)."""

    path: object          # the lock file (for messages)
    entry: dict | None    # the rig's entry; None: the lock has none for this rig
    mode: str = "frozen"  # frozen | reuse


@dataclass
class ResolvedRig:
    host: str
    doc: dict                                   # the validated host data, as declared
    commit: str                                 # the fork's commit (a preview may keep the declared ref)
    models: dict[str, ResolvedModel]            # by model name: the models the services use
    placements: dict[str, ServicePlan]          # by service name: planned (auto) or checked placements
    hub_token: str | None = field(default=None, repr=False)
    api_keys: dict[str, str] = field(default_factory=dict, repr=False)  # by service name; never printed
    lock: LockUse | None = None                 # the lock entry it was resolved from, if any
    notes: list[str] = field(default_factory=list)  # what a preview could not resolve

    @property
    def frozen(self) -> dict | None:
        """The lock entry this rig is frozen to (a deploy or render under rigs.lock), or None."""
        return self.lock.entry if self.lock is not None and self.lock.mode == "frozen" else None

    def placement(self, service_name: str):
        """The planned placement (Flags) a service runs with instead of its declared keys, or None."""
        sp = self.placements.get(service_name)
        return sp.placement if sp is not None else None


def lock_coverage(host: str, doc: dict, use: LockUse) -> list[Problem]:
    """What a frozen rig's data asks that its lock entry was not made from (the entry missing included)."""
    if use.entry is None:
        return [Problem(host, "rigs.lock", str(use.path), "an entry for this rig (run `llamarig lock` to add it)")]
    name = getattr(use.path, "name", str(use.path))
    return [Problem(host, miss.key, miss.value, f"what {name} was locked from, {miss.locked!r} "
                                               f"(run `llamarig lock --update` to lock the new data)")
            for miss in lockfile.uncovered(use.entry, doc)]


def _commit(host, doc, lookups, use, preview, notes, problems) -> str | None:
    entry = use.entry if use is not None else None
    if entry is not None and (use.mode == "frozen" or not lockfile.build_uncovered(entry, doc)):
        return entry["build"]["commit"]
    try:
        return lookups.git_ref(doc["build_git_url"], doc["build_ref"])
    except GitRefError as exc:
        if preview:
            notes.append(f"build_ref {doc['build_ref']} is not resolved ({exc}): the build prefix names the ref")
            return doc["build_ref"]
        problems.append(Problem(host, "build_ref", doc["build_ref"], f"a ref of {doc['build_git_url']} ({exc})"))
        return None


def _model(host, doc, name, token, lookups, use, preview, notes, problems) -> ResolvedModel | None:
    model = doc["models"][name]
    entry = use.entry if use is not None else None
    if entry is not None and (use.mode == "frozen" or not lockfile.model_uncovered(entry, name, model)):
        return lockfile.resolved_model(entry, name, doc["hub_endpoint"])
    try:
        return lookups.hub_model(name, model, doc["hub_endpoint"], token)
    except HubError as exc:
        if preview:  # the declared names stand in; an unset file stays unknown (None)
            notes.append(f"model {name} is not resolved ({exc}): its directory names revision {model['revision']}")
            return ResolvedModel(model["repo"], model["revision"], model["revision"], [], model["file"],
                                 doc["hub_endpoint"])
        problems.append(Problem(host, f"models.{name}", model["repo"], f"a model the Hub serves ({exc})"))
        return None


def read_secrets(host: str, doc: dict, lookups: Lookups) -> tuple[str | None, dict[str, str], list[Problem]]:
    """(the Hub token, API keys by service, problems): read on the controller, never shown."""
    problems: list[Problem] = []
    token = None
    try:
        token = lookups.hub_token(doc)
    except SecretError as exc:
        which = "hub_token_file" if doc["hub_token_file"] else "hub_token_env"
        problems.append(Problem(host, which, doc[which], f"a readable Hub token ({exc})"))
    keys: dict[str, str] = {}
    for i, svc in enumerate(doc["services"]):
        try:
            key = lookups.api_key(svc)
        except SecretError as exc:
            which = "api_key_file" if svc["api_key_file"] else "api_key_env"
            problems.append(Problem(host, f"services[{i}].{which}", svc[which], f"a readable API key ({exc})"))
            continue
        if key:
            keys[svc["name"]] = key
    return token, keys, problems


def resolve_rig(host: str, doc: dict, lookups: Lookups, lock: LockUse | None = None, *,
                preview: bool = False, check_explicit: bool = True) -> tuple[ResolvedRig | None, list[Problem]]:
    """(the resolved rig, []) or (None, the problems). ``check_explicit``: also check hand-written
    placements against the memory model (reads their models' headers)."""
    problems: list[Problem] = []
    notes: list[str] = []
    if lock is not None and lock.mode == "frozen":
        problems += lock_coverage(host, doc, lock)
        if problems:
            return None, problems
    commit = _commit(host, doc, lookups, lock, preview, notes, problems)
    token, keys, found = read_secrets(host, doc, lookups)
    if found:
        return None, problems + found
    models: dict[str, ResolvedModel] = {}
    for name in lockfile.used_models(doc):
        resolved = _model(host, doc, name, token, lookups, lock, preview, notes, problems)
        if resolved is not None:
            models[name] = resolved
    if problems or commit is None:
        return None, problems

    placements: dict[str, ServicePlan] = {}
    needed = headers_needed(doc, check_explicit)
    if needed:
        try:
            headers = {name: lookups.headers(models[name], token) for name in needed}
        except (HubError, GgufError) as exc:
            return None, [Problem(host, "services", "placement", f"model headers the planner can read ({exc})")]
        fork = doc["build_fork"]
        refused = []
        for name, info in headers.items():
            try:
                architectures.check(fork, info.arch)
            except ArchitectureError as exc:
                refused.append(Problem(host, f"models.{name}", doc["models"][name]["repo"],
                                       f"a model {fork} loads and llamarig's planner sizes, for the services that "
                                       f"plan or check a placement: {exc}"))
        if refused:
            return None, refused
        placements = plan_rig(doc, headers)
        found = placement_problems(host, doc, placements)
        if not check_explicit:
            found = [p for p in found if p.path.endswith(".placement")]
        if found:
            return None, found
    return ResolvedRig(host, doc, commit, models, placements, token, keys, lock, notes), []
