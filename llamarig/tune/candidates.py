"""What ``llamarig tune`` tries: one change at a time from the declared service, along named axes.

Each candidate is the declared service with a few host-data keys changed (``service``), or a rig key
(``rig``: the GPU margin the planner keeps, which moves the placement to the memory edge), or the GPUs'
power limits (``power``). One axis varies at a time; after a first round the engine may add the
combination of every axis's best value (``combined``). Whether a candidate fits is the planner's word,
asked in ``llamarig.tune.prepare``, not here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# axis -> what it varies (the README lists them)
AXES = {
    "threads": "--threads: generation threads (physical cores, half, all logical CPUs)",
    "threads_batch": "--threads-batch: prompt threads",
    "ubatch": "--ubatch-size (and --batch-size at least as large): prompt chunk; the placement is planned again",
    "flash_attn": "--flash-attn on/off",
    "margin": "gpu_margin_mib: the VRAM the planner keeps free, smaller: more of the model on the GPUs "
              "(placement: auto services on GPUs)",
    "fork_options": "ik_llama.cpp's run-time repack, fused MoE, grouped expert routing, merged QKV, MLA mode",
    "power": "GPU power limits in steps within the cards' range (only with --power)",
}
DEFAULT_AXES = ("threads", "threads_batch", "ubatch", "flash_attn", "margin", "fork_options")
UBATCHES = (128, 256, 512, 1024, 2048, 4096)
POWER_STEPS = (1.0, 0.85, 0.7, 0.55)  # of the card's maximum, none below its minimum
MLA_ARCHS = {"deepseek2", "deepseek3", "glm4moe_lite", "kimi_k2", "minimax_m2_mla"}


@dataclass(frozen=True)
class Candidate:
    id: str
    label: str
    axis: str | None                              # None: the declared service, or the combination
    service: dict = field(default_factory=dict)   # service keys changed
    rig: dict = field(default_factory=dict)       # rig keys changed
    power: dict = field(default_factory=dict)     # {gpu index: watts}; {} as the rig had them

    def to_json(self) -> dict:
        return {"id": self.id, "label": self.label, "axis": self.axis, "service": self.service,
                "rig": self.rig, "power": {str(k): v for k, v in self.power.items()}}


def _value_label(key: str, value) -> str:
    return f"{key} {str(value).lower() if isinstance(value, bool) else value}"


def generate(doc: dict, service: dict, facts: dict, axes: list[str], arch: str | None = None) -> list[Candidate]:
    """The declared service first, then each axis's values other than the declared one.

    ``facts``: what the rig said at ``begin`` (``cpus``, ``cores``, ``power``: limits by GPU with min/max).
    """
    fork = doc["build_fork"]
    out: list[Candidate] = [Candidate("c0", "declared", None)]

    def add(axis: str, label: str, service_keys: dict | None = None, rig_keys: dict | None = None,
            power: dict | None = None) -> None:
        out.append(Candidate(f"c{len(out)}", label, axis, dict(service_keys or {}), dict(rig_keys or {}),
                             dict(power or {})))

    cores, cpus = int(facts.get("cores") or 1), int(facts.get("cpus") or 1)
    if "threads" in axes:
        declared = service["threads"]
        for n in sorted({cores, max(1, cores // 2), cpus}):
            if n != declared:
                add("threads", _value_label("threads", n), {"threads": n})
    if "threads_batch" in axes:
        declared = service["threads_batch"] or service["threads"]
        for n in sorted({cores, cpus}):
            if n != declared:
                add("threads_batch", _value_label("threads_batch", n), {"threads_batch": n})
    if "ubatch" in axes:
        declared = service["ubatch_size"] or 512
        batch = service["batch_size"] or 2048
        ctx = service["ctx_size"] or 0
        for n in UBATCHES:
            if n == declared or (ctx and n > ctx):
                continue
            keys = {"ubatch_size": n}
            if n > batch:
                keys["batch_size"] = n
            add("ubatch", _value_label("ubatch_size", n), keys)
    if "flash_attn" in axes:
        effective = service["flash_attn"] or "auto"
        for value in ("on", "off"):
            if value != effective and not (value == "on" and effective == "auto" and fork == "ik_llama.cpp"):
                add("flash_attn", _value_label("flash_attn", value), {"flash_attn": value})
    if "margin" in axes and doc["gpus"] and service.get("placement") == "auto":
        margin = doc["gpu_margin_mib"]
        for value in sorted({margin * 3 // 4, margin // 2} - {margin}, reverse=True):
            if value >= 256:
                add("margin", _value_label("gpu_margin_mib", value), rig_keys={"gpu_margin_mib": value})
    if "fork_options" in axes and fork == "ik_llama.cpp":
        if not service.get("run_time_repack"):
            add("fork_options", "run_time_repack true", {"run_time_repack": True})
        if service.get("fused_moe") is False:
            add("fork_options", "fused_moe true", {"fused_moe": True})
        if not service.get("grouped_expert_routing"):
            add("fork_options", "grouped_expert_routing true", {"grouped_expert_routing": True})
        if not service.get("merge_qkv"):
            add("fork_options", "merge_qkv true", {"merge_qkv": True})
        if arch in MLA_ARCHS:
            for mla in (1, 2, 3):
                if mla != (service.get("mla_use") if service.get("mla_use") is not None else 3):
                    add("fork_options", _value_label("mla_use", mla), {"mla_use": mla})
    if "power" in axes:
        out += power_candidates(service_gpus_of(doc, service), facts.get("power") or {}, len(out))
    return out


def service_gpus_of(doc: dict, service: dict) -> list[int]:
    from llamarig.hostdata.validate import service_gpus
    return service_gpus(doc, service)


def power_candidates(gpus: list[int], power: dict, start: int) -> list[Candidate]:
    """The declared configuration at power limits in steps of each card's maximum, above its minimum."""
    out = []
    ranges = {g: power.get(str(g)) for g in gpus}
    if not gpus or any(r is None for r in ranges.values()):
        return out
    seen = set()
    for step in POWER_STEPS:
        limits = {g: float(round(max(r["min"], r["max"] * step))) for g, r in ranges.items()}
        key = tuple(sorted(limits.items()))
        current = tuple(sorted((g, float(round(r["limit"]))) for g, r in ranges.items()))
        if key in seen or key == current:
            continue
        seen.add(key)
        label = "power " + ", ".join(f"GPU {g} {w:g} W" for g, w in sorted(limits.items()))
        out.append(Candidate(f"c{start + len(out)}", label, "power", power=limits))
    return out


def combined(best_by_axis: dict[str, Candidate], next_id: int) -> Candidate | None:
    """One candidate holding every axis's best change (two axes or more), or None."""
    picks = [c for axis, c in sorted(best_by_axis.items()) if c is not None]
    if len(picks) < 2:
        return None
    service, rig, power = {}, {}, {}
    for c in picks:
        service.update(c.service)
        rig.update(c.rig)
        power.update(c.power)
    return Candidate(f"{build_prefix(picks[0].id)}c{next_id}", joined_label([c.label for c in picks]), None,
                     service, rig, power)


def joined_label(labels: list[str]) -> str:
    """The labels of a combination's changes, joined with " + ", with what they all share said once: the
    build they run on ("ik_llama.cpp: ") and arguments every one of them carries (" [-cuda fusion=0]")."""
    head = re.match(r"[^:\[]*: ", labels[0])
    head = head.group(0) if head and all(x.startswith(head.group(0)) for x in labels) else ""
    tail = re.search(r" \[[^\]]*\]$", labels[0])
    tail = tail.group(0) if tail and all(x.endswith(tail.group(0)) for x in labels) else ""
    core = [x[len(head):len(x) - len(tail)] for x in labels]
    return head + " + ".join(core) + tail


def build_prefix(cid: str) -> str:
    """The build a candidate id runs on: "" for the serving build (c0, c1 ...), "b1" for b1c0, b1c1 ..."""
    return cid[:cid.index("c")] if "c" in cid else ""


def fork_keys(doc: dict, entry: dict) -> dict:
    """The rig keys that make the rig build a ``tune_forks`` entry instead of its own build."""
    return {"build_fork": entry["build_fork"], "build_git_url": entry["build_git_url"], "build_ref": entry["build_ref"],
            "build_cmake_options": list(entry["build_cmake_options"] if entry["build_cmake_options"] is not None
                                        else doc["build_cmake_options"]),
            "build_targets": list(entry["build_targets"] if entry["build_targets"] is not None
                                  else doc["build_targets"])}


def with_forks(doc: dict, service: dict, facts: dict, axes: list[str], arch: str | None = None) -> list[Candidate]:
    """``generate`` for the rig's own build, then for each of its ``tune_forks``: the declared service on that
    build (axis ``fork``) and its axes' values there (ids ``b1c0``, ``b1c1``, ...; power limits are tried on the
    serving build only). Each candidate of another build carries that build's keys as rig keys."""
    out = generate(doc, service, facts, axes, arch)
    entries = doc.get("tune_forks") or []
    for n, entry in enumerate(entries, 1):
        keys = fork_keys(doc, entry)
        other = {**doc, **keys}
        twice = sum(1 for e in entries if e["build_fork"] == entry["build_fork"]) > 1 or \
            entry["build_fork"] == doc["build_fork"]
        name = f"{keys['build_fork']} {keys['build_ref']}" if twice else keys["build_fork"]
        for c in generate(other, service, facts, [a for a in axes if a != "power"], arch):
            out.append(Candidate(f"b{n}{c.id}", f"{name}: {c.label}", c.axis or "fork", dict(c.service),
                                 {**keys, **c.rig}, dict(c.power)))
    return out
