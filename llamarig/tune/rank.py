"""Rank measured candidates by one objective, each against the declared configuration and its noise.

A candidate is called better only when its gain over the declared configuration exceeds the noise
of both (``llamarig.bench.compare.judge``: twice their combined standard deviation); with one
measurement on either side the noise is unknown and nothing is called better.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llamarig.bench.compare import judge
from llamarig.bench.summary import Stat, summarize_many

FLOOR = 0.01  # a difference under 1% is never called better or worse

OBJECTIVES = {  # objective -> (figure of the bench summary, unit)
    "decode": ("decode_tps", "t/s"),
    "prefill": ("prefill_tps", "t/s"),
    "energy": ("decode_tokens_per_kwh", "tokens/kWh"),
}


@dataclass
class Ranked:
    id: str
    label: str
    status: str                 # measured | failed | not run | out of time
    score: Stat | None = None
    verdict: str = ""           # gain | within noise | regression | noise unknown | baseline
    percent: float | None = None
    noise: float | None = None
    why: str = ""               # for failed / not run

    def to_json(self) -> dict:
        out = asdict(self)
        out["score"] = asdict(self.score) if self.score else None
        return out


def score(raws: list[dict], objective: str, depth: int) -> Stat | None:
    """The objective's figure over every run of ``raws`` at ``depth``."""
    figure = OBJECTIVES[objective][0]
    for row in summarize_many(raws) if raws else []:
        if row.depth == depth:
            return getattr(row, figure)
    return None


def rank(labels: dict[str, str], measured: dict[str, list[dict]], failures: dict[str, dict],
         not_run: dict[str, str], objective: str, depth: int, baseline: str = "c0") -> list[Ranked]:
    """Every candidate, best first: measured ones by their mean, then failed, then those not run."""
    base = score(measured.get(baseline) or [], objective, depth)
    out = []
    for cid, label in labels.items():
        if cid in failures:
            f = failures[cid]
            out.append(Ranked(cid, label, "failed", why=f"{f['kind']}: {f.get('detail', '')}".strip(": ")))
            continue
        s = score(measured.get(cid) or [], objective, depth)
        if s is None:
            out.append(Ranked(cid, label, "not run" if cid in not_run else "out of time",
                              why=not_run.get(cid, "the tune's time ran out before it was measured")))
            continue
        r = Ranked(cid, label, "measured", s)
        if cid == baseline:
            r.verdict = "baseline"
        elif base is not None:
            r.noise, r.verdict = judge(base, s, True)
            if r.verdict in ("gain", "regression") and abs(s.mean - base.mean) < FLOOR * base.mean:
                r.verdict = "within noise"  # a spread of zero (identical runs) claims no certainty below 1%
            r.percent = (s.mean - base.mean) / base.mean * 100 if base.mean else None
        else:
            r.verdict = "noise unknown"
        out.append(r)
    order = {"measured": 0, "failed": 1, "out of time": 2, "not run": 3}
    out.sort(key=lambda r: (order[r.status], -(r.score.mean if r.score else 0)))
    return out


def winner(ranked: list[Ranked]) -> Ranked | None:
    """The best candidate whose gain over the declared configuration is beyond the noise, or None."""
    return next((r for r in ranked if r.verdict == "gain"), None)
