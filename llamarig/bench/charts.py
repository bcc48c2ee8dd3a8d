"""PNG charts of a result with matplotlib: speed against context, and tokens per kWh against context."""

from __future__ import annotations

from pathlib import Path

from llamarig.bench.summary import DepthRow
from llamarig.bench.table import context_label


def _series(summary: list[DepthRow], figure: str):
    points = [(r.depth, getattr(r, figure)) for r in summary if getattr(r, figure) is not None]
    return ([d for d, _ in points], [s.mean for _, s in points], [s.sd or 0.0 for _, s in points])


def _plot(ax, summary, figures: dict[str, str], ylabel: str) -> bool:
    drawn = False
    for figure, label in figures.items():
        x, y, err = _series(summary, figure)
        if x:
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
            drawn = True
    depths = [r.depth for r in summary]
    if depths and min(depths) > 0 and max(depths) >= 4 * min(depths):
        ax.set_xscale("log", base=2)
    elif depths and max(depths) >= 4 * max(1, min(d for d in depths if d > 0) if any(depths) else 1):
        ax.set_xscale("symlog", base=2, linthresh=max(1, min(d for d in depths if d > 0)))
    if depths:
        ax.set_xticks(sorted(set(depths)))
        ax.set_xticklabels([context_label(d) for d in sorted(set(depths))])
        ax.minorticks_off()
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend()
    return drawn


def write(summary: list[DepthRow], title: str, speed_png: Path, energy_png: Path) -> list[Path]:
    """Write the charts; the energy chart only when power was measured. Returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, (pre, dec) = plt.subplots(1, 2, figsize=(11, 4.2))
    _plot(pre, summary, {"prefill_tps": "prefill"}, "prefill (tokens/s)")
    _plot(dec, summary, {"decode_tps": "decode"}, "decode (tokens/s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(speed_png, dpi=100)
    plt.close(fig)
    written.append(speed_png)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if _plot(ax, summary, {"decode_tokens_per_kwh": "decode", "prefill_tokens_per_kwh": "prefill"},
             "tokens per kWh (GPUs)"):
        ax.set_yscale("log")
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(energy_png, dpi=100)
        written.append(energy_png)
    plt.close(fig)
    return written
