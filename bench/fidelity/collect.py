"""The fidelity table from run_cases.py's files.

    python bench/fidelity/collect.py DIR [--json OUT.json] [--md OUT.md]

Per case and device: predicted (the plan's total: weights + context memory + compute), measured (peak
``memory.used`` minus the ballast's), their difference, and what llama.cpp's own log says it allocated
there (its model, KV/recurrent and compute buffer lines, bench/seed_limits/collect.py's parser): the part of
the difference that is the runtime (CUDA context, cuBLAS, pools) and not a buffer the planner sized.

The target (issue 17): every device within max(3 %, 256 MiB) of measured, never under by more than 256 MiB.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

from bench.seed_limits.collect import parse_log  # noqa: E402

MiB = 1 << 20


def within(predicted: float, measured: float) -> bool:
    return abs(predicted - measured) <= max(0.03 * measured, 256) and predicted >= measured - 256


def rows(directory: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        if "case" not in doc:
            continue
        logpath = path[:-5] + ".log"
        logged = {}
        if os.path.exists(logpath):
            with open(logpath, errors="replace") as f:
                logged = parse_log(f.read()).get("buffers", {}).get("CUDA0", {})
        dev = (doc["plan"].get("devices") or [{}])[0]
        predicted = dev.get("total", 0) / MiB
        measured = doc.get("measured_mib")
        row = {"case": doc["case"], "fork": doc["fork"], "model": doc["model"], "ctx": doc["ctx"],
               "ubatch": doc["ubatch"], "parallel": doc["parallel"], "cache_type": doc.get("cache_type"),
               "outcome": doc["outcome"], "prompt_tokens": doc.get("prompt_tokens"),
               "predicted_mib": round(predicted), "measured_mib": measured,
               "planned": {k: round(dev.get(k, 0) / MiB) for k in ("weights", "kv", "compute")},
               "logged": {k: round(v / MiB) for k, v in logged.items()}}
        if measured is not None and doc["outcome"] == "serves":
            row["diff_mib"] = round(predicted - measured)
            row["within_target"] = within(predicted, measured)
            if logged:
                row["runtime_mib"] = measured - row["logged"].get("total", 0)  # what no buffer of llama.cpp's holds
        out.append(row)
    return out


def table(found: list[dict]) -> str:
    head = ("| fork | model | ctx | ubatch | slots | predicted MiB (w + kv + compute) | measured MiB | diff | "
            "llama.cpp's buffers (model + kv + compute) | outside buffers | target |")
    lines = [head, "|" + "---|" * 11]
    for r in found:
        p, lg = r["planned"], r["logged"]
        buffers = (f"{lg.get('total', 0):,} ({lg.get('model', 0):,} + {lg.get('kv', 0) + lg.get('rs', 0):,} + "
                   f"{lg.get('compute', 0):,})") if lg else "-"
        diff = f"{r['diff_mib']:+,}" if "diff_mib" in r else r["outcome"]
        measured = f"{r['measured_mib']:,}" if r["measured_mib"] is not None else "-"
        verdict = ("ok" if r.get("within_target") else "MISSED") if "within_target" in r else "-"
        lines.append(f"| {r['fork']} | {r['model']} | {r['ctx'] // 1024}K | {r['ubatch']} | {r['parallel']} | "
                     f"{r['predicted_mib']:,} ({p['weights']:,} + {p['kv']:,} + {p['compute']:,}) | "
                     f"{measured} | {diff} | {buffers} | "
                     f"{r.get('runtime_mib', '-')} | {verdict} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    found = rows(args.dir)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(found, f, indent=1)
    show(table(found), args.md)
    return 0


def show(text: str, md: str | None) -> None:
    """Print a table, and write it to ``md`` when given."""
    print(text)
    if md:
        with open(md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
