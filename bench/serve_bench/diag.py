"""Two small checks after the rounds, each a question the rounds left open; one JSON line each.

    python3 bench/serve_bench/diag.py --url URL --llama-bench BIN --model GGUF --lb-flags "..." --out diag.jsonl

1. ``sampler``: is the server's decode slower than llama-bench's tg because of the sampler? The same
   kind of request the rig bench sends (a 512-token prompt of the bench's text as token ids,
   ``cache_prompt: false``, 128 tokens, ``ignore_eos``), alternately with the server's default
   sampler chain and with ``samplers: ["top_k"], top_k: 1`` (one pass over the logits), 4 of each.
2. ``lb_pp_reversed``: is llama-bench's pp512 low because it is the first test after the model
   load? ``llama-bench -p 16384,4096,512 -n 0 -r 3`` (pp512 last, after 20k tokens of work).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import urllib.request


def post(url: str, body: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def sampler_runs(args, ids: list, runs: list) -> None:
    for i in range(8):
        greedy = i % 2 == 1
        body = {"prompt": ids[i * 7:i * 7 + args.depth], "n_predict": args.tokens, "ignore_eos": True,
                "cache_prompt": False, "stream": False}
        if greedy:
            body |= {"samplers": ["top_k"], "top_k": 1}
        t0 = time.monotonic()
        t = post(args.url + "/completion", body)["timings"]
        wall = (time.monotonic() - t0) * 1000
        runs.append({"sampler": "top_k=1 only" if greedy else "default chain", "prompt_n": t["prompt_n"],
                     "prompt_ms": t["prompt_ms"], "predicted_n": t["predicted_n"],
                     "predicted_ms": t["predicted_ms"], "predicted_per_second": t.get("predicted_per_second"),
                     "wall_ms": round(wall, 3)})
        print(f"diag sampler {runs[-1]['sampler']}: decode {t.get('predicted_per_second'):.1f} t/s "
              f"((n-1)/predicted_ms), prefill {t['prompt_n'] / t['prompt_ms'] * 1000:.0f} t/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--lb-flags", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--lb-prompts", default="16384,4096,512")
    args = ap.parse_args(argv)
    from pydoc_data.topics import topics
    text = "\n\n".join(topics[k] for k in sorted(topics))
    out = open(args.out, "a")
    runs = []
    try:
        ids = post(args.url + "/tokenize", {"content": text[:40000], "add_special": False})["tokens"]
        sampler_runs(args, ids, runs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"diag sampler failed: {type(exc).__name__}: {exc}", flush=True)
    out.write(json.dumps({"diag": "sampler", "depth": args.depth, "runs": runs}) + "\n")
    out.flush()
    argv_lb = [args.llama_bench, "-m", args.model, *shlex.split(args.lb_flags), "-r", "3", "-o", "json",
               "-p", args.lb_prompts, "-n", "0"]
    t0 = time.time()
    p = subprocess.run(argv_lb, capture_output=True, text=True, timeout=180)
    try:
        res = json.loads(p.stdout)
    except ValueError:
        res = None
    out.write(json.dumps({"diag": "lb_pp_reversed", "argv": argv_lb, "rc": p.returncode, "t_start": t0,
                          "t_end": time.time(), "result": res, "stderr_tail": p.stderr[-2000:]}) + "\n")
    for t in res or []:
        print(f"diag lb reversed: pp{t['n_prompt']}: {t['avg_ts']:.0f} ± {t['stddev_ts']:.0f} t/s "
              f"(samples {', '.join(f'{x:.0f}' for x in t['samples_ts'])})", flush=True)
    return 0 if res else 1


if __name__ == "__main__":
    sys.exit(main())
