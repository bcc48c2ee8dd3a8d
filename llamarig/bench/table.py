"""A result as the seeds print it: context, prefill t/s, decode t/s, TTFT, watts, decode tokens per kWh."""

from __future__ import annotations

from llamarig.bench.summary import DepthRow, Stat

HEADER = ("Context", "Prefill (t/s)", "Decode (t/s)", "TTFT (ms)", "Power (W)", "Decode (tokens/kWh)")


def context_label(depth: int) -> str:
    """512, 4K, 16K: a depth as the seeds write it (the charts' ticks too)."""
    return f"{depth // 1024}K" if depth >= 1024 and depth % 1024 == 0 else str(depth)


def _stat(stat: Stat | None, digits: int = 2, grouped: bool = False) -> str:
    if stat is None:
        return "-"
    mean = f"{stat.mean:,.0f}" if grouped else f"{stat.mean:,.{digits}f}"
    if stat.sd is None:
        return mean
    sd = f"{stat.sd:,.0f}" if grouped else f"{stat.sd:,.{digits}f}"
    return f"{mean} +- {sd}"


def rows(summary: list[DepthRow]) -> list[tuple[str, ...]]:
    return [(context_label(r.depth), _stat(r.prefill_tps), _stat(r.decode_tps), _stat(r.ttft_ms, 0),
             _stat(r.decode_w, 1), _stat(r.decode_tokens_per_kwh, grouped=True)) for r in summary]


def render(title: str, summary: list[DepthRow], notes: list[str] = ()) -> str:
    """The table as text: a title line, aligned columns, then notes (one per line)."""
    body = [HEADER, *rows(summary)]
    widths = [max(len(line[i]) for line in body) for i in range(len(HEADER))]
    lines = [title] + ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip() for line in body]
    return "\n".join(lines + [f"  {n}" for n in notes]) + "\n"


def markdown(summary: list[DepthRow]) -> str:
    body = [HEADER, *rows(summary)]
    out = ["| " + " | ".join(body[0]) + " |", "|" + "---|" * len(HEADER)]
    return "\n".join(out + ["| " + " | ".join(line) + " |" for line in body[1:]]) + "\n"
