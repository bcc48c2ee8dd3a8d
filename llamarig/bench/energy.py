"""Watts over a window of time and tokens per kWh, from the rig's nvidia-smi samples.

A sample is ``[t, row_gpu0, row_gpu1, ...]``: ``t`` in seconds on the same clock as the
requests, each row ``[power.draw, power.limit, clocks.sm, clocks.mem, temperature.gpu]``
of one of the service's GPUs (``rig_programs/llamarig-bench.py``). A sample's power holds
until the next sample (nvidia-smi's reading is itself an average over its last interval),
so a window's mean is the time-weighted mean of the steps it covers.
"""

from __future__ import annotations

JOULES_PER_KWH = 3.6e6


def total_watts(sample: list) -> float | None:
    """The service's GPUs' draw at one sample; None when a GPU's reading is missing."""
    draws = [row[0] for row in sample[1:]]
    return None if not draws or any(d is None for d in draws) else float(sum(draws))


def window_watts(samples: list[list], start: float, end: float) -> float | None:
    """Mean total draw over [start, end] (seconds); None without a usable sample."""
    steps = [(s[0], total_watts(s)) for s in samples]
    steps = [(t, w) for t, w in steps if w is not None]
    if not steps:
        return None
    if end <= start:
        return _at(steps, start)
    energy = 0.0
    for i, (t, w) in enumerate(steps):
        begin = start if i == 0 else max(start, t)       # the first reading stands for the time before it
        finish = end if i == len(steps) - 1 else min(end, steps[i + 1][0])
        if finish > begin:
            energy += w * (finish - begin)
    return energy / (end - start)


def _at(steps: list[tuple[float, float]], t: float) -> float:
    before = [w for s, w in steps if s <= t]
    return before[-1] if before else steps[0][1]


def tokens_per_kwh(tokens: float, watts: float | None, seconds: float) -> float | None:
    """Tokens per kWh of the GPUs' energy: tokens / (watts * seconds / 3.6e6)."""
    if not watts or seconds <= 0 or not tokens:
        return None
    return tokens / (watts * seconds / JOULES_PER_KWH)


def phases(run: dict) -> dict[str, tuple[float, float]]:
    """A request's prefill and decode windows on the sampling clock, from the server's own timings."""
    start = run["t_start"]
    prompt_s = (run.get("prompt_ms") or 0) / 1000
    decode_s = (run.get("predicted_ms") or 0) / 1000
    return {"prefill": (start, start + prompt_s), "decode": (start + prompt_s, start + prompt_s + decode_s)}


def limits_seen(power: dict | None) -> list[dict]:
    """Per GPU: the power limits and the clock range seen while it ran (a limit that changed shows two)."""
    if not power or not power.get("samples"):
        return []
    out = []
    for i, gpu in enumerate(power["gpus"]):
        rows = [s[i + 1] for s in power["samples"]]
        limits = sorted({r[1] for r in rows if r[1] is not None})
        sm = [r[2] for r in rows if r[2] is not None]
        mem = [r[3] for r in rows if r[3] is not None]
        temp = [r[4] for r in rows if len(r) > 4 and r[4] is not None]
        out.append({"gpu": gpu, "power_limits_w": limits,
                    "sm_clock_mhz": [min(sm), max(sm)] if sm else None,
                    "mem_clock_mhz": [min(mem), max(mem)] if mem else None,
                    "temperature_c": [min(temp), max(temp)] if temp else None})
    return out
