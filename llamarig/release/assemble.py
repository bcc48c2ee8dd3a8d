"""A release: what one rig runs, assembled once from a resolved rig and the rig's facts.

``make_release(rig, facts)`` is the only code that assembles a build plan, a
service's argv, a unit's text and what its live check must find; the deploy
tasks, ``llamarig lock``, ``render``, ``plan`` and ``verify`` all read them from
the ``Release`` it returns.

The rig's facts (``RigFacts``: a CUDA build or not, and for which architectures)
come from the rig (``nvcc``, ``nvidia-smi``'s compute capability), from the lock
for a frozen rig, or, offline, from an assumption a preview says it made.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from llamarig import layout, programs
from llamarig.hostdata.validate import Problem
from llamarig.release import lock as lockfile
from llamarig.release.build import build_plan, cuda_architectures
from llamarig.release.expect import expectation
from llamarig.release.flags import server_args
from llamarig.release.power import boot_commands, declared_limits
from llamarig.release.resolve import ResolvedRig
from llamarig.release.unit import API_KEY_ARG, has_api_key, render_power_unit, render_rpc_unit, render_unit, rpc_argv


@dataclass(frozen=True)
class RigFacts:
    """What the rig decides about its build: CUDA or not, and the CMake CUDA architectures."""

    cuda: bool
    archs: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"CUDA {','.join(self.archs)}" if self.cuda else "CPU"


def facts_from_rig(doc: dict, nvcc: str | None, compute_caps: list[str]) -> tuple[RigFacts | None, str | None]:
    """(facts, None) from what the rig reports, or (None, why not) when they cannot decide the build."""
    if not doc["gpus"] or not nvcc:
        return RigFacts(False), None
    archs = cuda_architectures(doc["build_cuda_architectures"], compute_caps)
    if not archs:
        return None, "build_cuda_architectures is auto but nvidia-smi reports no compute capability; declare them"
    return RigFacts(True, tuple(archs)), None


def facts_from_lock(entry: dict) -> RigFacts:
    return RigFacts(bool(entry["build"]["cuda"]), tuple(entry["build"]["cuda_architectures"]))


# Offline previews only: the compute capability of common cards, so that a preview names a likely prefix.
_KNOWN_CAPS = {"3060": "86", "3070": "86", "3080": "86", "3090": "86", "a4000": "86", "a5000": "86",
               "a6000": "86", "a100": "80", "4060": "89", "4070": "89", "4080": "89", "4090": "89",
               "l40": "89", "h100": "90", "h200": "90", "5090": "120", "5080": "120", "v100": "70"}


def assumed_facts(doc: dict) -> tuple[RigFacts, str]:
    """Facts for a preview made without the rig, and the sentence saying what was assumed."""
    if not doc["gpus"]:
        return RigFacts(False), "a CPU build (no GPUs declared)"
    declared = doc["build_cuda_architectures"]
    if declared != "auto":
        archs = cuda_architectures(declared, [])
        return RigFacts(True, tuple(archs)), f"a CUDA build for {','.join(archs)} (nvcc on the rig is assumed)"
    caps = []
    for gpu in doc["gpus"]:
        name = gpu["model"].lower().replace(" ", "")
        cap = next((c for key, c in _KNOWN_CAPS.items() if key in name), None)
        caps.append(cap)
    if None in caps:
        return RigFacts(True, ("native",)), ("a CUDA build for the rig's own architectures (auto: read on the "
                                             "rig by a deploy; named native here)")
    archs = sorted(set(caps))
    return RigFacts(True, tuple(archs)), (f"a CUDA build for {','.join(archs)} (auto: the declared cards' "
                                          f"compute capability; a deploy reads it on the rig)")


@dataclass(frozen=True)
class UnitRelease:
    service: str        # the service's name
    unit: str           # the unit's file name
    path: str           # where it is installed
    text: str
    argv: tuple[str, ...]  # llama-server's arguments (no program name)
    binary: str         # the llama-server it runs
    expect: dict        # what its live check must find (llamarig-check.py's expectation)

    @property
    def digest(self) -> str:
        return lockfile.unit_digest(self.text)


@dataclass(frozen=True)
class RpcUnitRelease:
    server: str         # the rpc_servers entry's name
    unit: str
    path: str
    text: str
    argv: tuple[str, ...]
    binary: str
    listen: tuple[str, int]   # the address and port it binds (checked on the rig after a start)

    @property
    def digest(self) -> str:
        return lockfile.unit_digest(self.text)


@dataclass(frozen=True)
class Release:
    host: str
    facts: RigFacts
    build: dict                          # llamarig.release.build.build_plan, plus url and record
    units: dict[str, UnitRelease]        # by unit file name, in the services' order
    power_unit: str | None = None        # the boot unit's text (rigs with GPUs)
    preview: list[str] = field(default_factory=list)  # why it may differ from what a deploy installs; [] exact
    rpc_units: dict[str, RpcUnitRelease] = field(default_factory=dict)  # the rig's rpc-servers, by unit name

    def unit_texts(self) -> dict[str, str]:
        """Every unit llamarig installs for the rig's services and RPC servers, by file name (the lock's)."""
        return {name: u.text for name, u in {**self.units, **self.rpc_units}.items()}


@dataclass(frozen=True)
class Deployment:
    """A resolved rig and its release: what a deploy installs on it, or what a command shows of it."""

    rig: ResolvedRig
    release: Release

    @property
    def doc(self) -> dict:
        return self.rig.doc

    @property
    def exact(self) -> bool:
        """Whether this is byte for byte what a deploy installs (no assumption made, nothing left unresolved)."""
        return not self.release.preview


def service_argv(rig: ResolvedRig, service: dict) -> list[str]:
    doc = rig.doc
    model = rig.models[service["model"]]
    # a preview that could not ask the Hub which GGUF to run names none (``render`` refuses to print it)
    path = layout.model_path(doc["models_dir"], service["model"], model.commit, model.file or "UNRESOLVED.gguf")
    args = server_args(service, path, doc["build_fork"], rig.placement(service["name"]))
    if has_api_key(service):
        args += ["--api-key-file", API_KEY_ARG]
    return args


def make_release(rig: ResolvedRig, facts: RigFacts, preview: list[str] | None = None) -> Release:
    doc = rig.doc
    plan = build_plan(doc, rig.commit, cuda=facts.cuda, archs=list(facts.archs))
    plan["url"] = doc["build_git_url"]
    plan["record"] = json.dumps({"commit": plan["commit"], "url": plan["url"], "key": plan["key"],
                                 "targets": plan["targets"], "cmake_args": plan["cmake_args"]}, sort_keys=True)
    binary = layout.server_binary(plan["prefix"])
    units = {}
    for svc in doc["services"]:
        name = layout.unit_name(svc["name"])
        model = rig.models[svc["model"]]
        argv = service_argv(rig, svc)
        text = render_unit(rig.host, doc, svc, model, binary, argv)
        units[name] = UnitRelease(svc["name"], name, layout.unit_path(name), text, tuple(argv), binary,
                                  expectation(doc, svc, model))
    rpc_units = {}
    for server in doc["rpc_servers"]:
        name = layout.rpc_unit_name(server["name"])
        argv = rpc_argv(doc, server)
        rpc_bin = layout.rpc_binary(plan["prefix"])
        prune = ["python3", layout.libexec(doc["build_root"], programs.RPC_CACHE), layout.rpc_cache(server["name"]),
                 str(int(server["cache_max_gib"] * 2**30))]
        rpc_units[name] = RpcUnitRelease(server["name"], name, layout.unit_path(name),
                                         render_rpc_unit(rig.host, doc, server, rpc_bin, argv, prune), tuple(argv),
                                         rpc_bin, (server["host"], server["port"]))
    power = None
    if doc["gpus"]:
        power = render_power_unit(rig.host, boot_commands(declared_limits(doc), doc["power_persistence_mode"],
                                                          len(doc["gpus"])))
    return Release(rig.host, facts, plan, units, power, list(rig.notes) + list(preview or []), rpc_units)


def frozen_release(rig: ResolvedRig, rig_facts: RigFacts | None = None) -> tuple[Release, list[Problem]]:
    """The release of a rig frozen by its lock entry (built for the facts the lock holds), and where it departs
    from the entry: ``lock_problems``, the rig's own facts included when given."""
    release = make_release(rig, facts_from_lock(rig.frozen))
    return release, lock_problems(rig, release, rig_facts)


def lock_problems(rig: ResolvedRig, release: Release, rig_facts: RigFacts | None = None) -> list[Problem]:
    """Where a frozen rig's release departs from its lock entry: the build key, a unit's digest, and (given
    what the rig reports) the facts the lock's build was made for. [] when not frozen or all agree."""
    entry = rig.frozen
    if entry is None:
        return []
    host, name = rig.host, getattr(rig.lock.path, "name", str(rig.lock.path))
    problems = []
    if rig_facts is not None and rig_facts != facts_from_lock(entry):
        problems.append(Problem(host, "gpus", rig_facts.describe(),
                                f"what {name} builds here, {facts_from_lock(entry).describe()}: the rig now calls "
                                f"for another build; nothing was built (run `llamarig lock --update` to lock what "
                                f"the rig has)"))
    if release.build["key"] != entry["build"]["key"]:
        problems.append(Problem(host, "build_cmake_options", rig.doc["build_cmake_options"],
                                f"the build {name} locked, {entry['build']['key']} (run `llamarig lock --update`)"))
        return problems
    digests = {u: lockfile.unit_digest(text) for u, text in release.unit_texts().items()}
    for unit in sorted(set(digests) | set(entry["units"])):
        if digests.get(unit) != entry["units"].get(unit):
            what = ("no longer declared" if unit not in digests else "rendered differently" if unit in entry["units"]
                    else "not in the lock")
            problems.append(Problem(host, "services", unit, f"the units {name} locked ({unit} is {what}; "
                                                            f"run `llamarig lock` to lock the change)"))
    return problems
