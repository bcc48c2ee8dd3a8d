"""The measured cases again, predicted by today's planner: each case's argv (its placement as it ran) read back
into flags and evaluated, against what the card used then. For a planner change made after a run: what it
would have predicted for the very same servers (no GPU needed).

    python bench/fidelity/replay.py DIR --model qwen3moe=M.gguf --model qwen35moe=H.gguf ... [--md OUT.md]

The model files are the ones the run used, written again here from the same script (sparse: a few MB of
disk): bench/serve_bench/write_model.py for qwen3moe, bench/fidelity/write_model.py SPEC for the others.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

from bench.fidelity.collect import show, within  # noqa: E402
from llamarig.planner.gguf import read_model  # noqa: E402
from llamarig.planner.memory import GiB, MiB, Settings  # noqa: E402
from llamarig.planner.placement import Flags  # noqa: E402
from llamarig.planner.plan import evaluate  # noqa: E402


def replay(doc: dict, model) -> dict:
    a = doc["argv"]

    def val(flag, default=None):
        return a[a.index(flag) + 1] if flag in a else default

    overrides = [tuple(a[i + 1].rsplit("=", 1)) for i, w in enumerate(a) if w == "--override-tensor"]
    ubatch = min(int(val("--ubatch-size", 512)), int(val("--batch-size", 2048)))
    s = Settings(fork=doc["fork"], ctx=int(val("--ctx-size")),
                 parallel=int(val("--parallel")) if "--parallel" in a else None,
                 cache_k=val("--cache-type-k", "f16"), cache_v=val("--cache-type-v", "f16"), ubatch=ubatch,
                 flash_attn=val("--flash-attn", "on") != "off",
                 repack="--run-time-repack" in a or "-rtr" in a)
    ngl = val("--n-gpu-layers")
    p = evaluate(model, Flags(1, int(ngl) if ngl else None, None, overrides), [24 * GiB], 100 * GiB, s)
    r = p.devices[0]
    return {k: round(getattr(r, k) / MiB) for k in ("weights", "kv", "compute", "runtime", "total")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--model", action="append", default=[], help="NAME=PATH of a case's model")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    files = dict(m.split("=", 1) for m in args.model)
    models = {}
    lines = ["| fork | model | ctx | ubatch | slots | measured MiB | predicted then | predicted now (w + kv + compute "
             "+ runtime) | now - measured | target |", "|" + "---|" * 10]
    for path in sorted(glob.glob(os.path.join(args.dir, "*.json"))):
        with open(path) as f:
            doc = json.load(f)
        if "case" not in doc or doc.get("measured_mib") is None or doc["model"] not in files:
            continue
        model = models.setdefault(doc["model"], read_model(files[doc["model"]]))
        now = replay(doc, model)
        then = round(doc["plan"]["devices"][0]["total"] / MiB)
        m = doc["measured_mib"]
        lines.append(f"| {doc['fork']} | {doc['model']} | {doc['ctx'] // 1024}K | {doc['ubatch']} | {doc['parallel']} | "
                     f"{m:,} | {then:,} ({then - m:+,}) | {now['total']:,} ({now['weights']:,} + {now['kv']:,} + "
                     f"{now['compute']:,} + {now['runtime']:,}) | {now['total'] - m:+,} | "
                     f"{'ok' if within(now['total'], m) else 'MISSED'} |")
    show("\n".join(lines), args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
