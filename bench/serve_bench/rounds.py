"""Interleave the rig bench and llama-bench in rounds against one model; one JSON line per invocation.

    python3 bench/serve_bench/rounds.py --url URL --llama-bench BIN --model GGUF --out rounds.jsonl \
        --deadline EPOCH [--rounds-max 40] [--min-rounds 10] [--reps-per-round 1] \
        [--depths 512,4096,16384] [--tokens 128] [--gpus 0] [--lb-flags "-ngl 99 -fa on ..."]

A round is one run of ``rig_programs/llamarig-bench.py`` (``--repetitions R --warmup 1``: every
depth R times, prefill from an empty context and decode of ``tokens`` after it) and two runs of
``llama-bench -r R -o json`` with the server's flags: ``-p DEPTHS -n 0`` (pp at depth 0) and
``-p 0 -n TOKENS -d DEPTHS`` (tg after each depth). Even rounds run the rig bench first, odd rounds
llama-bench first, so a slow drift of the card (clocks, temperature) favours neither tool.

A round starts only if the longest round so far still fits before ``--deadline`` (the first one
always starts). Each invocation's line: round, tool (``rig`` / ``lb_pp`` / ``lb_tg``), argv,
t_start / t_end (epoch s), rc, the tool's JSON output (parsed) and the tail of its stderr; the
first llama-bench invocation keeps its whole stderr (the model load log).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.path.join(REPO, "rig_programs", "llamarig-bench.py")


def say(text: str) -> None:
    print(f"rounds [{time.strftime('%H:%M:%S')}]: {text}", flush=True)


def invoke(argv: list[str], timeout: float) -> dict:
    t0 = time.time()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        rc, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as exc:
        rc = 124
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    t1 = time.time()
    try:
        parsed = json.loads(out) if out.strip() else None
    except ValueError:
        lines = [line for line in out.splitlines() if line.strip().startswith("{")]
        try:
            parsed = json.loads(lines[-1]) if lines else None
        except ValueError:
            parsed = None
    return {"argv": argv, "t_start": round(t0, 3), "t_end": round(t1, 3), "rc": rc,
            "result": parsed, "stdout_unparsed": None if parsed is not None else out[-4000:], "stderr": err}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--deadline", type=float, required=True, help="epoch seconds: no round may end later")
    ap.add_argument("--rounds-max", type=int, default=40)
    ap.add_argument("--min-rounds", type=int, default=10, help="only said in the log when not reached")
    ap.add_argument("--reps-per-round", type=int, default=1)
    ap.add_argument("--depths", default="512,4096,16384")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--gpus", default="0")
    ap.add_argument("--lb-flags", default="-ngl 99 -fa on -ctk f16 -ctv f16 -ub 512 -b 2048 -t 8")
    ap.add_argument("--first-round", type=int, default=0, help="number of the first round (a second call goes on)")
    ap.add_argument("--py", default=sys.executable)
    args = ap.parse_args(argv)

    R = args.reps_per_round
    rig = [args.py, BENCH, "--url", args.url, "--gpus", args.gpus, "--depths", args.depths,
           "--repetitions", str(R), "--tokens", str(args.tokens), "--warmup", "1"]
    lb = [args.llama_bench, "-m", args.model, *shlex.split(args.lb_flags), "-r", str(R), "-o", "json"]
    lb_pp = lb + ["-p", args.depths, "-n", "0"]
    lb_tg = lb + ["-p", "0", "-n", str(args.tokens), "-d", args.depths]

    longest, done, first_lb = 0.0, 0, True
    with open(args.out, "a") as out:
        for k in range(args.rounds_max):
            rnd = args.first_round + k
            left = args.deadline - time.time()
            if done and longest * 1.1 > left:
                say(f"stop: {left:.0f} s left, the longest round took {longest:.0f} s")
                break
            t0 = time.time()
            order = [("rig", rig), ("lb_pp", lb_pp), ("lb_tg", lb_tg)]
            if rnd % 2:
                order = order[1:] + order[:1]
            for tool, cmd in order:
                timeout = max(30.0, args.deadline - time.time() + 60)
                rec = invoke(cmd, timeout)
                keep_all = tool != "rig" and first_lb
                if tool != "rig":
                    first_lb = False
                rec["stderr"] = rec["stderr"] if keep_all else rec["stderr"][-3000:]
                rec.update(round=rnd, tool=tool)
                out.write(json.dumps(rec, sort_keys=True) + "\n")
                out.flush()
                res = rec["result"]
                if tool == "rig" and isinstance(res, dict) and res.get("ok"):
                    pp = {}
                    for r in res["runs"]:
                        pp.setdefault(r["depth"], []).append(
                            (r["prompt_n"] / r["prompt_ms"] * 1000, r["predicted_n"] / r["predicted_ms"] * 1000))
                    summary = ", ".join(f"d{d}: pp {sum(a for a, _ in v) / len(v):.0f} tg {sum(b for _, b in v) / len(v):.1f}"
                                        for d, v in pp.items())
                elif tool != "rig" and isinstance(res, list):
                    summary = ", ".join(f"{'pp' if t['n_prompt'] else 'tg'}{t['n_prompt'] or t['n_gen']}"
                                        f"@d{t['n_depth']}: {t['avg_ts']:.1f}" for t in res)
                else:
                    summary = f"FAILED: {str(res)[:300]} {rec['stderr'][-600:]}"
                say(f"round {rnd} {tool}: rc {rec['rc']}, {rec['t_end'] - rec['t_start']:.1f} s: {summary}")
                if rec["rc"] != 0:
                    say("an invocation failed: stopping the rounds")
                    return 1
            longest = max(longest, time.time() - t0)
            done += 1
            say(f"round {rnd} took {time.time() - t0:.1f} s")
    if done < args.min_rounds:
        say(f"only {done} rounds (wanted {args.min_rounds}) in this call")
    say(f"{done} rounds done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
