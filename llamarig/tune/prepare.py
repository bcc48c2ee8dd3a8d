"""Each candidate through the same path as a deploy: host data, validation, resolution, plan, flags, unit.

A candidate is the declared host data with a few keys changed; it is validated like any host data,
resolved against the rig's lock entry (reused: the same commit and model files, the placement planned
again for the changed keys), and rendered by the one flags table and unit template. What the planner
says does not fit, or what needs another build than the one serving, is not run: it comes back with
the reason. The unit is turned into a transient unit's properties (``llamarig.tune.transient``) on a
loopback port of its own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from llamarig import layout
from llamarig.hostdata.rpc_links import relink, unlinked
from llamarig.hostdata.validate import validate_host
from llamarig.release.assemble import assumed_facts, facts_from_lock, make_release
from llamarig.release.resolve import LockUse, resolve_rig
from llamarig.tune.candidates import Candidate
from llamarig.tune.transient import PORT_WORD, TransientError, bind, candidate_argv, unit_properties

MiB = 1024 * 1024


@dataclass
class Prepared:
    candidate: Candidate
    problem: str | None = None            # why it is not run (the planner, validation, another build)
    binary: str = ""
    unit: str = ""                        # the transient unit it runs in on a rig
    argv: list[str] = field(default_factory=list)
    properties: list[str] = field(default_factory=list)
    unit_text: str = ""
    predicted_mib: list[dict] = field(default_factory=list)  # per device: budget, total (the plan's figures)
    host_keys: dict = field(default_factory=dict)             # the host data that gives this candidate

    def to_json(self) -> dict:
        return {"candidate": self.candidate.to_json(), "problem": self.problem, "binary": self.binary,
                "argv": self.argv, "predicted_mib": self.predicted_mib, "host_keys": self.host_keys}


def changed_doc(doc: dict, service_name: str, candidate: Candidate) -> dict:
    out = copy.deepcopy(doc)
    out.update(candidate.rig)
    for svc in out["services"]:
        if svc["name"] == service_name:
            svc.update(candidate.service)
    return out


def host_keys(candidate: Candidate, service_name: str) -> dict:
    """The host-data keys to write to keep this candidate (rig keys, the service's keys, power limits)."""
    keys: dict = dict(candidate.rig)
    if candidate.power:
        keys["power_limits_w"] = {int(g): w for g, w in sorted(candidate.power.items())}
    if candidate.service:
        keys["services"] = [{"name": service_name, **candidate.service}]
    return keys


def release_for(host: str, data: dict, locks, lookups, rig_facts=None, *, preview: bool = False,
                check_explicit: bool = False):
    """Host data released as a deploy would: validated, resolved with the rig's lock entry reused (its commit and
    files kept, the rest looked up), built for ``rig_facts`` (what the rig reported; None: the lock entry's, else
    what a preview assumes). (rig, release, None), or (None, None, the problems in words)."""
    data, links = unlinked(data)  # what another rig's data said (rpc_devices) is kept, not validated again
    normalized, problems = validate_host(host, data)
    if problems:
        return None, None, "; ".join(f"{p.path}: {p.expected}" for p in problems[:3])
    relink(normalized, links)
    path, entries = locks
    entry = entries.get(host) if entries is not None else None
    use = LockUse(path, entry, mode="reuse") if entries is not None else None
    rig, problems = resolve_rig(host, normalized, lookups, use, preview=preview, check_explicit=check_explicit)
    if rig is None:
        return None, None, "; ".join(p.expected for p in problems[:3])
    facts = rig_facts or (facts_from_lock(entry) if entry is not None else assumed_facts(normalized)[0])
    return rig, make_release(rig, facts), None


def prepare(host: str, doc: dict, service_name: str, candidate: Candidate, locks, lookups,
            serving_build_key: str, rig_facts=None) -> Prepared:
    """``rig_facts``: what decides the rig's build (nvcc, compute capabilities), as the rig reported them;
    None: the lock entry's, else what a preview assumes."""
    out = Prepared(candidate, host_keys=host_keys(candidate, service_name))
    rig, release, out.problem = release_for(host, changed_doc(doc, service_name, candidate), locks, lookups,
                                            rig_facts, preview=locks[1] is None)
    if release is None:
        return out
    if release.build["key"] != serving_build_key:
        out.problem = (f"needs another build ({release.build['key']}) than the one serving ({serving_build_key})")
        return out
    unit = release.units[layout.unit_name(service_name)]
    out.binary = unit.binary
    out.unit_text = unit.text
    out.unit = layout.tune_candidate_unit(service_name, candidate.id)
    try:
        out.properties, out.argv = bind(unit_properties(unit.text), candidate_argv(list(unit.argv)), out.unit)
    except TransientError as exc:
        out.problem = str(exc)
        return out
    sp = rig.placements.get(service_name)
    if sp is not None:
        out.predicted_mib = [{"device": d.name, "budget": d.budget // MiB, "total": d.total // MiB}
                             for d in sp.plan.devices]
    return out


__all__ = ["Prepared", "prepare", "changed_doc", "host_keys", "PORT_WORD"]
