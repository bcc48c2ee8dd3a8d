"""Placement for the services of one rig: plan `placement: auto` services, check the others.

Services share the rig's GPUs by their declared GPU sets. On a GPU that several services
share (``shared_gpus: true``), the services with hand-written placements are counted first
(as the loaders would place them), and the `auto` services divide what is left equally.
System RAM (``ram_gib``) is shared by all services of the rig.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamarig.forks.options import canonical
from llamarig.planner.gguf import ModelInfo
from llamarig.planner.memory import GiB, MiB, Settings
from llamarig.planner.placement import Flags
from llamarig.planner.plan import Plan, evaluate, plan
from llamarig.hostdata.validate import service_gpus
from llamarig.release import rpc

PLACEMENT_KEYS = ("n_gpu_layers", "tensor_split", "tensor_overrides", "n_cpu_moe", "cpu_moe", "fit")


FORK_DEFAULTS = {"ubatch": 512, "batch": 2048, "cache": "f16", "mla": 3, "flash_attn": True, "swa_full": False,
                 "cache_ram_mib": 8192, "ctx_checkpoints": 32}
"""What the planner assumes when a service declares nothing, which is each pinned fork's own default
(common/common.h: n_ubatch 512, n_batch 2048, F16 cache, ik's mla_attn 3; flash attention on: llama.cpp's auto enables it
where the backend has it, ik's default is on; no --swa-full; an 8192 MiB RAM prompt cache and 32 context
checkpoints per slot in both). The context is the model's trained one, as both
forks take ``--ctx-size 0``; slots, the server's automatic ones."""


def settings(doc: dict, service: dict, model: ModelInfo | None = None) -> Settings:
    """The memory-relevant settings a service runs with: its typed keys, the flags among its extra_args
    that change memory (``--swa-full``, ``--kv-unified``/``--no-kv-unified``, ``--no-kv-offload``,
    ``--cache-ram``, ``--ctx-checkpoints``, ik's ``--run-time-repack``), else the fork's defaults."""
    ctx = service["ctx_size"] or (model.n_ctx_train if model else 4096)
    extra_args = list(service.get("extra_args") or [])
    extra = {canonical(doc["build_fork"], a.split("=", 1)[0]) for a in extra_args}
    return Settings(fork=doc["build_fork"], ctx=ctx, parallel=service["parallel"],
                    cache_k=service["cache_type_k"] or FORK_DEFAULTS["cache"],
                    cache_v=service["cache_type_v"] or FORK_DEFAULTS["cache"],
                    ubatch=effective_ubatch(service),
                    flash_attn=service["flash_attn"] != "off" if service["flash_attn"] else FORK_DEFAULTS["flash_attn"],
                    mla=FORK_DEFAULTS["mla"] if service.get("mla_use") is None else service["mla_use"],
                    swa_full="--swa-full" in extra or FORK_DEFAULTS["swa_full"],
                    kv_unified=_last_switch(doc["build_fork"], extra_args, "--kv-unified", "--no-kv-unified"),
                    kv_offload="--no-kv-offload" not in extra,
                    cache_ram_mib=_int_arg(doc["build_fork"], extra_args, "--cache-ram", FORK_DEFAULTS["cache_ram_mib"]),
                    ctx_checkpoints=_int_arg(doc["build_fork"], extra_args, "--ctx-checkpoints",
                                             FORK_DEFAULTS["ctx_checkpoints"]),
                    repack=bool(service.get("run_time_repack")) or "--run-time-repack" in extra)


def effective_ubatch(service: dict) -> int:
    """The ubatch the server runs: both forks clamp ``--ubatch-size`` to ``--batch-size`` (llama_context's
    ``n_ubatch = min(n_batch, n_ubatch)``), so a 4096 ubatch under the default 2048 batch runs as 2048."""
    return min(service["ubatch_size"] or FORK_DEFAULTS["ubatch"], service.get("batch_size") or FORK_DEFAULTS["batch"])


def _last_switch(fork: str, args: list[str], on: str, off: str) -> bool | None:
    """True or False by the last of ``on``/``off`` (any spelling) among extra_args; None when neither is there."""
    value = None
    for word in args:
        name = canonical(fork, word.split("=", 1)[0])
        if name in (on, off):
            value = name == on
    return value


def _int_arg(fork: str, args: list[str], flag: str, default: int) -> int:
    """The value of ``flag`` (any spelling of it) among a service's extra_args; the last one wins."""
    value = default
    for i, word in enumerate(args):
        name, eq, inline = word.partition("=")
        if canonical(fork, name) == flag:
            text = inline if eq else (args[i + 1] if i + 1 < len(args) else "")
            try:
                value = int(text)
            except ValueError:
                pass
    return value


def flags_of(service: dict, n_devices: int) -> Flags:
    """The declared placement as the planner sees it (its devices numbered as the planner does: a service's
    RPC devices first, rpc.py)."""
    return Flags(n_devices, service["n_gpu_layers"], service["tensor_split"],
                 [(p[0], rpc.to_planner(p[1], service)) for p in service["tensor_overrides"]],
                 service["n_cpu_moe"], bool(service["cpu_moe"]))


def checkable(doc: dict, service: dict) -> bool:
    """Whether a hand-written placement is the loaders' to replay: split mode layer, and not
    left to llama.cpp's start-up fit (its default when no placement flag is given)."""
    if service.get("placement") == "auto":
        return True
    if service["split_mode"] not in (None, "layer") or not (service_gpus(doc, service) or rpc.devices(service)):
        return False
    if doc["build_fork"] == "llama.cpp" and service["fit"] is not False:
        return any(service[k] not in (None, [], False) for k in PLACEMENT_KEYS if k != "fit")
    return True


@dataclass
class ServicePlan:
    name: str
    auto: bool  # planned by llamarig (placement: auto); else the declared placement, checked
    plan: Plan

    @property
    def placement(self):
        """The flags a unit runs with instead of the declared placement keys (auto services), or None."""
        return self.plan.flags if self.auto else None


def plan_rig(doc: dict, models: dict[str, ModelInfo]) -> dict[str, ServicePlan]:
    """Plans of every checkable service of a rig, by service name; `models` by model name."""
    margin = doc["gpu_margin_mib"] * MiB
    ram = int(doc["ram_gib"] * GiB) if doc["ram_gib"] else None
    memory_of = [int(g["memory_gib"] * GiB) for g in doc["gpus"]]
    used = [0] * len(memory_of)
    out: dict[str, ServicePlan] = {}
    services = [s for s in doc["services"] if checkable(doc, s) and s["model"] in models]
    host_used = 0
    for svc in [s for s in services if s.get("placement") != "auto"]:
        gpus = service_gpus(doc, svc)
        model = models[svc["model"]]
        remote = rpc.budgets(svc, margin)  # a service's RPC devices come first, as llama.cpp orders them
        p = evaluate(model, flags_of(svc, len(remote) + len(gpus)), remote + [memory_of[g] for g in gpus], ram,
                     settings(doc, svc, model), margin, split_mode=svc["split_mode"])
        for row, g in zip(p.devices[len(remote):], gpus):
            used[g] += row.total
        host_used += p.host["total"]
        out[svc["name"]] = ServicePlan(svc["name"], False, p)
    autos = [s for s in services if s.get("placement") == "auto"]
    sharing = {g: sum(1 for s in autos if g in service_gpus(doc, s)) for g in range(len(memory_of))}
    for svc in autos:
        gpus = service_gpus(doc, svc)
        model = models[svc["model"]]
        budget = [(memory_of[g] - used[g] - margin) // max(sharing[g], 1) + margin for g in gpus]
        host = None if ram is None else (ram - host_used) // max(len(autos), 1)
        out[svc["name"]] = ServicePlan(svc["name"], True, plan(model, rpc.budgets(svc, margin) + budget, host,
                                                               settings(doc, svc, model), margin))
    return out


def placement_problems(host: str, doc: dict, plans: dict[str, ServicePlan]) -> list:
    from llamarig.hostdata.validate import Problem
    problems = []
    for i, svc in enumerate(doc["services"]):
        sp = plans.get(svc["name"])
        if sp and not sp.plan.fits:
            what = "a model and context that fit this rig" if sp.auto else "a placement that fits this rig's GPUs and RAM"
            problems.append(Problem(host, f"services[{i}].placement" if sp.auto else f"services[{i}]",
                                    svc.get("placement") or svc["name"],
                                    f"{what}: {sp.plan.reason} (llamarig plan prints the table)"))
    return problems


def headers_needed(doc: dict, check_explicit: bool = True) -> list[str]:
    """The models whose headers the rig's placements need (auto services; with ``check_explicit``, the
    checkable hand-written ones too)."""
    return sorted({s["model"] for s in doc["services"]
                   if (s.get("placement") == "auto") or (check_explicit and checkable(doc, s))})
