"""The README's example of `llamarig bench`'s table and charts, from the H200 rounds (serve_bench).

    .venv/bin/python bench/serve_bench/example.py

Reads the rig program's results in bench/results/serve-bench-h200-raw/call*-rounds.jsonl and
writes, with llamarig's own code (llamarig.bench: summary, table, charts), the table the
command prints (serve-bench-h200-table.txt) and its two charts (serve-bench-h200-speed.png,
serve-bench-h200-energy.png). Those rounds were measured by the program before it recorded the
server's own rates: they are put back here as llama.cpp defines them (prompt_n / prompt_ms,
(predicted_n - 1) / predicted_ms), which is what the program records now.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from llamarig.bench import charts, table  # noqa: E402
from llamarig.bench.summary import summarize_many  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def rounds() -> list[dict]:
    out = []
    for path in sorted((RESULTS / "serve-bench-h200-raw").glob("call*-rounds.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            if record.get("tool") == "rig" and record.get("result", {}).get("ok"):
                raw = record["result"]
                for run in raw["runs"]:
                    run.setdefault("prompt_per_second", run["prompt_n"] / run["prompt_ms"] * 1000)
                    run.setdefault("predicted_per_second", (run["predicted_n"] - 1) / run["predicted_ms"] * 1000)
                out.append(raw)
    return out


def main() -> int:
    raws = rounds()
    summary = summarize_many(raws)
    gpu = raws[0]["rig"]["gpus"][0]
    title = f"H200 (Qwen3-30B-A3B-shaped Q8_0, llama.cpp), {len(raws)} rounds"
    notes = [f"GPU 0 {gpu['name']} at {gpu['power.limit']:g} W; driver {raws[0]['rig']['driver_version']}, "
             f"CUDA {raws[0]['rig']['cuda_version']}; 128 tokens generated; synthetic weights"]
    text = table.render(title, summary, notes)
    (RESULTS / "serve-bench-h200-table.txt").write_text(text)
    charts.write(summary, title, RESULTS / "serve-bench-h200-speed.png", RESULTS / "serve-bench-h200-energy.png")
    print(text)
    print(table.markdown(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
