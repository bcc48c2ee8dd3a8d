"""The closing report of a deploy: per rig, what each service now serves and how it is placed.

Built from the resolved rig and its release (what the deploy installs: the same in ``--dry``, where it is
the plan) and, after a real deploy, what the rig said while the deploy ran: each service's check verdict
and what nvidia-smi shows each GPU using (``live``). Printed after pyinfra's results and written as JSON.
"""

from __future__ import annotations

import re
from collections import Counter

from llamarig import layout
from llamarig.release import rpc
from llamarig.hostdata.rules import service_gpus
from llamarig.planner.memory import MiB
from llamarig.release.expect import answer_text
from llamarig.release.power import declared_limits


def placement_line(plan) -> str:
    """Layers on each device and where the routed experts are, in one line."""
    layers = plan.layers[:-1]
    on = Counter(layers)
    parts = [f"{on[d]} layers on {d}" for d in sorted(on, key=lambda d: (d == "CPU", d))]
    cpu_experts = _cpu_expert_layers(plan)
    if cpu_experts:
        parts.append(f"the routed experts of {cpu_experts} of them on the CPU")
    return ", ".join(parts) + f"; output layer on {plan.layers[-1]}"


def _cpu_expert_layers(plan) -> int:
    """GPU layers whose routed experts the overrides send to the CPU (llama.cpp's rule: the first
    pattern found in the tensor's name wins); 0 when no override names experts."""
    overrides = plan.flags.overrides
    if not any("exps" in pattern for pattern, _ in overrides):
        return 0
    count = 0
    for il, dev in enumerate(plan.layers[:-1]):
        name = f"blk.{il}.ffn_up_exps.weight"
        where = next((d for pattern, d in overrides if re.search(pattern, name)), dev)
        count += dev != "CPU" and where == "CPU"
    return count


def rig_report(rig, release, live: dict | None = None) -> dict:
    """The report of one rig (``rig``: llamarig.release.resolve.ResolvedRig; ``release``: its Release;
    ``live``: {"verdicts": {unit: verdict}, "gpus": [{"index", "memory_used_mib", "power_limit_w"}],
    "exposure": {unit: level}}, each part present once the deploy read it)."""
    doc = rig.doc
    live = live or {}
    limits = declared_limits(doc) if doc["gpus"] else {}
    used = {g["index"]: g for g in live.get("gpus") or []}
    gpus = [{"index": i, "model": g["model"], "memory_gib": g["memory_gib"], "power_limit_w": limits.get(i),
             "memory_used_mib": used.get(i, {}).get("memory_used_mib"),
             "power_limit_seen_w": used.get(i, {}).get("power_limit_w")}
            for i, g in enumerate(doc["gpus"])]
    services = []
    for svc in doc["services"]:
        unit = layout.unit_name(svc["name"])
        declared = doc["models"][svc["model"]]
        model = rig.models.get(svc["model"])
        sp = rig.placements.get(svc["name"])
        plan = sp.plan if sp is not None else None
        verdict = (live.get("verdicts") or {}).get(unit)
        prompt = release.units[unit].expect.get("prompt") if unit in release.units else None
        services.append({
            "name": svc["name"], "unit": unit,
            "url": f"http://{svc.get('host') or '127.0.0.1'}:{svc['port']}",
            "model": svc["model"], "repo": declared["repo"], "revision": declared["revision"],
            "commit": getattr(model, "commit", None),
            "fork": doc["build_fork"], "fork_commit": rig.commit,
            "ctx_size": svc["ctx_size"], "slots": svc["parallel"] or "auto",
            "gpus": service_gpus(doc, svc),
            "placement": placement_line(plan) if plan is not None else "not planned: llama-server places it when it starts",
            "planned_by": ("llamarig" if sp is not None and sp.auto else "the data") if sp is not None else None,
            "predicted_vram_mib": ({rpc.to_llama(r.name, svc): round(r.total / MiB) for r in plan.devices}
                                   if plan is not None else None),
            "rpc": rpc.endpoints(svc),
            "answered": _answered(verdict, prompt),
            "exposure": (live.get("exposure") or {}).get(unit),
        })
    lends = [{"unit": name, "endpoint": rpc.listen_endpoint(u.listen), "argv": list(u.argv)}
             for name, u in release.rpc_units.items()]
    return {"rig": rig.host, "gpus": gpus, "services": services, "rpc_servers": lends, "executed": bool(live)}


def _answered(verdict, prompt: str | None = None) -> str | None:
    if verdict is None:
        return None
    if not verdict.get("ok"):
        return f"no: {verdict.get('error') or 'the check failed'}"
    if verdict.get("answered_before"):
        return f"yes, {verdict['answered_before']}"
    said = answer_text(verdict.get("answer"))
    tokens = verdict.get("completion_tokens")
    count = f" ({tokens} tokens)" if tokens else ""
    if prompt and said.strip().lower() == answer_text(prompt).strip().lower():
        return f"yes{count}, repeating the prompt: a base model, not tuned for chat, does"
    return f"yes{count}: {said!r}"


def render(reports: list[dict], dry: bool) -> str:
    """The report as text, a block per rig."""
    lines = [f"--> llamarig: {'what this deploy would serve (--dry: planned, nothing live)' if dry else 'what the rigs serve'}"]
    for r in reports:
        if r.get("failed"):
            lines.append(f"    [{r['rig']}] FAILED: not reported (its error is above; what served before still serves)")
            continue
        lines.append(f"    [{r['rig']}]")
        for g in r["gpus"]:
            seen = f", {g['memory_used_mib']} MiB used now" if g.get("memory_used_mib") is not None else ""
            limit = f"{g['power_limit_w']:g} W" if g["power_limit_w"] is not None else "default power limit"
            lines.append(f"      GPU {g['index']}: {g['model']} {g['memory_gib']:g} GiB, {limit}{seen}")
        for x in r.get("rpc_servers") or []:
            lines.append(f"      {x['unit']}: rpc-server at {x['endpoint']}, lending {x['argv'][x['argv'].index('--device') + 1]}"
                         f" -- no authentication: reachable only on a private network, never the internet")
        for s in r["services"]:
            lines.append(f"      {s['name']}: {s['url']}  {s['model']} ({s['repo']}@{str(s['commit'] or s['revision'])[:12]})"
                         f"  {s['fork']} {str(s['fork_commit'])[:12]}  ctx {s['ctx_size'] or 'trained'} x "
                         f"{s['slots']} slot(s), GPUs {s['gpus'] or 'none'}")
            lines.append(f"        placement: {s['placement']}")
            if s["predicted_vram_mib"]:
                lines.append("        predicted VRAM: " + ", ".join(f"{d} {m} MiB" for d, m in s["predicted_vram_mib"].items()))
            if s.get("rpc"):
                lines.append(f"        RPC workers: {', '.join(s['rpc'])} (rpc-server has no authentication: this "
                             f"link must be a private network)")
            if s["answered"] is not None:
                lines.append(f"        answered: {s['answered']}")
            if s["exposure"] is not None:
                lines.append(f"        exposure (systemd-analyze security, 0 best, 10 worst): {s['exposure']}")
    return "\n".join(lines)
