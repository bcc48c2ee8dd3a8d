"""The tune's table, the host data that gives the winner, and the result kept beside the bench's."""

from __future__ import annotations

import json

from llamarig.tune.rank import OBJECTIVES, Ranked


def host_data_lines(keys: dict) -> list[str]:
    """Host-data keys as lines to paste into an inventory (Python literals)."""
    return [f"{key}={json.dumps(value) if not isinstance(value, dict) else repr(value)}"
            if key != "services" else f"services: change {', '.join(f'{k}={v!r}' for k, v in value[0].items() if k != 'name')} "
            f"in the service named {value[0]['name']!r}" for key, value in keys.items()]


def table(title: str, ranked: list[Ranked], objective: str, notes: list[str], against: str = "declared") -> str:
    figure, unit = OBJECTIVES[objective]
    w = max([52, *(len(r.label) for r in ranked)])   # whole labels: a combination's last change counts too
    lines = [title, f"  {'':2} {'candidate':{w}} {objective + ' ' + unit:>22}  {'vs ' + against:>12}  verdict"]
    for i, r in enumerate(ranked, 1):
        if r.status == "measured":
            s = r.score
            value = f"{s.mean:.4g}" + (f" +- {s.sd:.2g}" if s.sd is not None else "") + f" (n={s.n})"
            vs = f"{r.percent:+.1f}%" if r.percent is not None else ""
            verdict = {"gain": "better, beyond the noise", "within noise": "within the noise",
                       "regression": "worse, beyond the noise"}.get(r.verdict, r.verdict)
            lines.append(f"  {i:2} {r.label:{w}} {value:>22}  {vs:>12}  {verdict}")
        else:
            lines.append(f"   - {r.label:{w}} {r.status}: {r.why}")
    lines += [f"  {n}" for n in notes]
    return "\n".join(lines) + "\n"


def margin_notes(failures: dict, prepared: dict, margin_mib: int) -> list[str]:
    """What an out-of-memory candidate tells about the planner's margin."""
    notes = []
    for cid, f in failures.items():
        if f.get("kind") != "out of memory":
            continue
        p = prepared[cid]
        devices = ", ".join(f"{d['device']} {d['total']} of {d['budget']} MiB" for d in p.predicted_mib) or \
            "no GPU plan"
        notes.append(f"{p.candidate.label}: out of memory where the planner predicted {devices} with a margin of "
                     f"{p.candidate.rig.get('gpu_margin_mib', margin_mib)} MiB: that margin is too small for it")
    return notes
