"""A run against the last run of the same service: what moved beyond the noise, and what changed.

The noise of one figure at one depth is what its repetitions spread: a change counts
only when it exceeds twice the combined standard deviation of single runs of both
results (``2 * sqrt(sd_old^2 + sd_new^2)``), a bound on how far two single runs
differ by chance alone. With one repetition on either side the noise is unknown and
nothing is called a regression.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from llamarig.bench.summary import DepthRow, Stat

# figure -> True when more is better
COMPARED = {"prefill_tps": True, "decode_tps": True, "ttft_ms": False,
            "decode_tokens_per_kwh": True, "prefill_tokens_per_kwh": True}
NOISE_SIGMAS = 2.0


@dataclass(frozen=True)
class Change:
    depth: int
    figure: str
    old: float
    new: float
    noise: float | None
    verdict: str  # regression | gain | within noise | noise unknown

    @property
    def percent(self) -> float:
        return (self.new - self.old) / self.old * 100 if self.old else math.inf

    def to_json(self) -> dict:
        return asdict(self) | {"percent": round(self.percent, 2)}

    def line(self) -> str:
        noise = f", noise +-{self.noise:.4g}" if self.noise is not None else ""
        return (f"depth {self.depth} {self.figure}: {self.old:.4g} -> {self.new:.4g} "
                f"({self.percent:+.1f}%{noise}): {self.verdict}")


def judge(old: Stat, new: Stat, higher_is_better: bool) -> tuple[float | None, str]:
    if old.sd is None or new.sd is None:
        return None, "noise unknown"
    noise = NOISE_SIGMAS * math.hypot(old.sd, new.sd)
    delta = new.mean - old.mean
    if abs(delta) <= noise:
        return noise, "within noise"
    better = delta > 0 if higher_is_better else delta < 0
    return noise, "gain" if better else "regression"


def compare(old: list[DepthRow], new: list[DepthRow]) -> list[Change]:
    """Every figure both results measured at a depth both ran."""
    before = {r.depth: r for r in old}
    out = []
    for row in new:
        prior = before.get(row.depth)
        if prior is None:
            continue
        for figure, higher in COMPARED.items():
            a, b = getattr(prior, figure), getattr(row, figure)
            if a is None or b is None:
                continue
            noise, verdict = judge(a, b, higher)
            out.append(Change(row.depth, figure, a.mean, b.mean, noise, verdict))
    return out


# What in a result's provenance changes what it measures; each a path into the result.
PROVENANCE = {
    "build commit": ("server", "build", "commit"),
    "build options": ("server", "build", "cmake_args"),
    "server flags": ("server", "argv"),
    "model files": ("release", "model", "files"),
    "model revision": ("release", "model", "commit"),
    "GPU power limits": ("power_limits_w",),
    "driver": ("rig_facts", "driver_version"),
    "CUDA": ("rig_facts", "cuda_version"),
    "unit": ("server", "unit_sha256"),
}


def _get(result: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(result, dict):
            return None
        result = result.get(key)
    return result


def provenance_changes(old: dict, new: dict) -> list[str]:
    """What differs between two results' provenance, in words (the reasons a figure may have moved)."""
    out = []
    for what, path in PROVENANCE.items():
        a, b = _get(old, path), _get(new, path)
        if a != b:
            if isinstance(a, str) and isinstance(b, str) and len(a) == len(b) == 40:
                out.append(f"{what}: {a[:12]} -> {b[:12]}")
            elif isinstance(a, list) and isinstance(b, list) and what == "server flags":
                out.append(f"{what}: {flag_changes(a, b)}")
            else:
                out.append(f"{what}: {_short(a)} -> {_short(b)}")
    return out


def flags(argv: list[str]) -> dict[str, str | None]:
    """A command line's flags and their values (the program, before the first flag, left out)."""
    out: dict[str, str | None] = {}
    words = list(argv)
    while words and not words[0].startswith("-"):
        words.pop(0)
    flag = None
    for word in words:
        if word.startswith("-") and not _number(word):
            name, eq, value = word.partition("=")
            out[name] = value if eq else None
            flag = None if eq else name
        elif flag is not None:
            out[flag] = word if out[flag] is None else f"{out[flag]} {word}"
    return out


def _number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


def flag_changes(old: list[str], new: list[str]) -> str:
    """``--threads 2 -> 1, added --api-key-file ..., removed --mlock``: the flags that differ, by name."""
    a, b = flags(old), flags(new)
    parts = []
    for name in sorted(set(a) | set(b)):
        if name not in b:
            parts.append(f"removed {name}")
        elif name not in a:
            parts.append(f"added {name}" + (f" {b[name]}" if b[name] is not None else ""))
        elif a[name] != b[name]:
            parts.append(f"{name} {a[name]} -> {b[name]}")
    return ", ".join(parts) or "the same flags in another order"


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
