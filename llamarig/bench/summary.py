"""One row per context depth: mean and standard deviation of what the repetitions measured."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from llamarig.bench.energy import phases, tokens_per_kwh, window_watts


@dataclass(frozen=True)
class Stat:
    mean: float
    sd: float | None  # None with one value
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Stat | None":
        values = [v for v in values if v is not None]
        if not values:
            return None
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        return cls(mean, sd, len(values))

    @property
    def cv(self) -> float | None:
        """Coefficient of variation (sd / mean)."""
        return self.sd / self.mean if self.sd is not None and self.mean else None


METRICS = ("prefill_tps", "decode_tps", "ttft_ms", "prefill_w", "decode_w",
           "prefill_tokens_per_kwh", "decode_tokens_per_kwh")


@dataclass(frozen=True)
class DepthRow:
    depth: int
    runs: int
    prefill_tps: Stat | None      # None at depth 0 (a one-token prompt measures no prefill)
    decode_tps: Stat | None
    ttft_ms: Stat | None          # the server's prompt time: until the first generated token
    prefill_w: Stat | None        # mean draw of the service's GPUs during prefill; None without GPUs
    decode_w: Stat | None
    prefill_tokens_per_kwh: Stat | None
    decode_tokens_per_kwh: Stat | None
    not_prefilled: int            # runs whose server processed fewer prompt tokens than sent (a cache hit)
    contended: int                # runs during which another request was processing

    def to_json(self) -> dict:
        return asdict(self)


def run_figures(run: dict, samples: list | None) -> dict:
    """One request's figures: the server's own rates (its ``timings``; computed from counts and times for a
    server that gives none), watts over its phases, tokens per kWh."""
    prompt_s, decode_s = (run.get("prompt_ms") or 0) / 1000, (run.get("predicted_ms") or 0) / 1000
    prompt_n, decode_n = run.get("prompt_n") or 0, run.get("predicted_n") or 0
    prefill = run.get("prompt_per_second") or (prompt_n / prompt_s if prompt_s > 0 else None)
    decode = run.get("predicted_per_second") or (decode_n / decode_s if decode_s > 0 else None)
    out = {"prefill_tps": prefill if run["depth"] > 0 else None, "decode_tps": decode,
           "ttft_ms": run.get("prompt_ms"), "prefill_w": None, "decode_w": None,
           "prefill_tokens_per_kwh": None, "decode_tokens_per_kwh": None}
    if samples:
        windows = phases(run)
        out["prefill_w"] = window_watts(samples, *windows["prefill"]) if run["depth"] > 0 else None
        out["decode_w"] = window_watts(samples, *windows["decode"])
        # tokens per kWh at the phase's rate: rate * 3.6e6 / watts (one second's tokens over one second's energy)
        out["prefill_tokens_per_kwh"] = tokens_per_kwh(prefill, out["prefill_w"], 1.0) \
            if run["depth"] > 0 and prefill else None
        out["decode_tokens_per_kwh"] = tokens_per_kwh(decode, out["decode_w"], 1.0) if decode else None
    return out


def summarize(raw: dict) -> list[DepthRow]:
    """The rig program's raw result -> one row per depth, in the order the depths were asked for."""
    return summarize_many([raw])


def summarize_many(raws: list[dict]) -> list[DepthRow]:
    """Several raw results of the same service (rounds of a longer measurement) as one summary: each run's
    watts come from its own result's samples (each result has its own clock)."""
    pairs = [(r, (raw.get("power") or {}).get("samples") or None) for raw in raws for r in raw["runs"]]
    rows = []
    for depth in dict.fromkeys(r["depth"] for r, _ in pairs):
        runs = [r for r, _ in pairs if r["depth"] == depth]
        figures = [run_figures(r, samples) for r, samples in pairs if r["depth"] == depth]
        stats = {m: Stat.of([f[m] for f in figures]) for m in METRICS}
        not_prefilled = sum(1 for r in runs if (r.get("prompt_n") or 0) < max(1, r["prompt_tokens"]))
        rows.append(DepthRow(depth, len(runs), **stats, not_prefilled=not_prefilled,
                             contended=sum(1 for r in runs if r.get("contended"))))
    return rows


def row_from_json(data: dict) -> DepthRow:
    stats = {m: Stat(**data[m]) if data.get(m) else None for m in METRICS}
    return DepthRow(data["depth"], data["runs"], **stats, not_prefilled=data.get("not_prefilled", 0),
                    contended=data.get("contended", 0))
