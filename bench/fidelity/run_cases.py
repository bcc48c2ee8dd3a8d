"""The planner's memory per device against what llama-server really takes on one GPU (issue 17, point 5).

    python bench/fidelity/run_cases.py --fork llama.cpp --server BIN --model M.gguf --name qwen3moe \
        --out DIR [--ctx 32768 131072] [--ubatch 512 4096] [--parallel 1 4] [--gpus 24] [--ram 100]
        [--cache-type f16] [--prompt 3000] [--deadline EPOCH]

For every case (each context x ubatch x slots): ``python -m llamarig plan MODEL --gpus .. --ram ..
--ctx N --ubatch U --parallel P --fork F --json`` gives the placement's arguments and the planner's bytes per
device (weights, KV cache and recurrent state, compute buffers); llama-server is started with exactly
those arguments (plus ``--host``/``--port``; the plan's argv carries ubatch, batch, slots, cache types and
flash attention, issue 17 point 3), GPU 0's ``memory.used`` is sampled every 0.2 s
(``bench/seed_limits/cases.py``'s Sampler) while it loads and while one ``/completion`` of PROMPT token ids
(a few thousand: several ubatches run) and 4 generated tokens runs; then it is stopped.

Measured per device: the peak ``memory.used`` minus its value before the start (the ballast and nothing
else) -- everything the server's process holds there: its buffers, the CUDA context, cuBLAS's workspace
and the pools. Predicted: the plan's ``total`` for that device (weights + context memory + compute),
and the same plus the planner's runtime estimate (``runtime_mib`` in the JSON, when it has one).

One JSON file per case in DIR (written as soon as the case ends: a call that ends early keeps what ran), its
server's log beside it; ``collect.py`` makes the table. A case that would end after --deadline is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

from bench.seed_limits.cases import Sampler, gpu_state, http, stop  # noqa: E402
from llamarig.tune.engine import CRASH  # noqa: E402

PORT = 18290


def log(msg: str) -> None:
    print(f"[fidelity {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def plan_json(args, ctx: int, ubatch: int, parallel: int) -> tuple[dict, int]:
    cmd = [sys.executable, "-m", "llamarig", "plan", args.model, "--gpus", args.gpus, "--ram", str(args.ram),
           "--ctx", str(ctx), "--ubatch", str(ubatch), "--parallel", str(parallel), "--fork", args.fork,
           "--cache-type", args.cache_type, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode not in (0, 1):
        raise SystemExit(f"fidelity: llamarig plan exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout), done.returncode


def prompt_ids(n: int, n_vocab: int, seed: int) -> list[int]:
    rnd = random.Random(seed)
    hi = max(300, min(n_vocab - 300, 30000))  # ordinary tokens, away from a vocabulary's specials at the end
    return [rnd.randrange(260, hi) for _ in range(n)]


def stacks(pid: int) -> str | None:
    """Every thread's backtrace of a server that does not answer (gdb, when the machine has it)."""
    for gdb in (os.environ.get("STACKS_GDB") or "gdb", "cuda-gdb"):  # STACKS_GDB: when PATH's gdb is a stub
        try:
            done = subprocess.run([gdb, "-batch", "-p", str(pid), "-ex", "thread apply all bt 25"],
                                  capture_output=True, text=True, timeout=60)
            return (done.stdout + done.stderr)[-20000:]
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def run_case(args, name: str, ctx: int, ubatch: int, parallel: int) -> dict:
    plan, rc = plan_json(args, ctx, ubatch, parallel)
    doc: dict = {"case": name, "fork": args.fork, "model": args.name, "ctx": ctx, "ubatch": ubatch,
                 "parallel": parallel, "cache_type": args.cache_type, "plan": plan, "plan_fits": rc == 0}
    argv = [args.server, "--model", args.model, *plan["args"], "--host", "127.0.0.1", "--port", str(PORT),
            *args.server_arg]
    doc["argv"] = argv
    logpath = os.path.join(args.out, f"{name}.log")
    doc["before"] = {k: v for k, v in gpu_state(0).items() if k != "t"}
    devices = ", ".join(f"{d['name']} {d['total'] / 2**20:.0f} MiB" for d in plan["devices"])
    log(f"{name}: planned {devices} (fits: {rc == 0}); device used before {doc['before'].get('used')} MiB")
    log(f"{name}: $ {' '.join(argv)}")
    t0 = time.time()
    with open(logpath, "wb") as lf:
        p = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, CUDA_VISIBLE_DEVICES="0"), start_new_session=True)
    sampler = Sampler(p.pid, 0, every=0.2)
    sampler.start()
    base = f"http://127.0.0.1:{PORT}"
    outcome = "timeout"
    while time.time() - t0 < args.start_timeout:
        if p.poll() is not None:
            outcome = "exited"
            break
        if http(base + "/health", timeout=2)[0] == 200:
            outcome = "ready"
            break
        time.sleep(0.3)
    doc["start_s"] = round(time.time() - t0, 2)
    if outcome == "ready":
        doc["at_ready_used_mib"] = sampler.snapshot()["used_mib"]
        body = {"prompt": prompt_ids(args.prompt, args.n_vocab, ctx + ubatch + parallel), "n_predict": 4,
                "cache_prompt": False, "ignore_eos": True}
        t1 = time.time()
        code, text = http(base + "/completion", body,
                          timeout=max(30.0, min(args.request_timeout, args.deadline - t1 - 20)))
        doc["request_s"], doc["request_status"] = round(time.time() - t1, 2), code
        if code == 0 and p.poll() is None:
            doc["stacks"] = stacks(p.pid)  # no answer from a live server: where its threads are
        try:
            answer = json.loads(text)
        except ValueError:
            answer = {"raw": text[:400]}
        doc["timings"] = answer.get("timings")
        doc["prompt_tokens"] = (answer.get("timings") or {}).get("prompt_n")
        outcome = "serves" if code == 200 and "content" in answer else (
            "exited" if p.poll() is not None else "request-failed")
        if outcome != "serves":
            doc["error"] = answer.get("error") or answer.get("raw")
        time.sleep(0.5)  # one more sample after the last ubatch
    sampler.stop_ev.set()
    sampler.join(5)
    doc["rc"], doc["stopped"] = stop(p, grace=15.0)
    doc["outcome"], doc["wall_s"] = outcome, round(time.time() - t0, 2)
    doc["peak_used_mib"] = sampler.peak_used_mib
    doc["peak_pid_mib"] = sampler.peak_pid_mib
    doc["peak_host_hwm_bytes"] = sampler.peak_hwm or None
    before = doc["before"].get("used")
    doc["measured_mib"] = (sampler.peak_used_mib - before) if None not in (sampler.peak_used_mib, before) else None
    with open(logpath, errors="replace") as f:
        text = f.read()
    doc["log_tail"] = text[-3000:] if outcome != "serves" else None
    doc["crash"] = next((line.strip() for line in text.splitlines() if CRASH.search(line)), None)
    pred = plan["devices"][0]["total"] / 2**20 if plan["devices"] else None
    if doc["crash"]:
        log(f"{name}: the server crashed: {doc['crash']}")
    log(f"{name}: {outcome} in {doc['wall_s']} s (prompt {doc.get('prompt_tokens')} tokens); measured "
        f"{doc['measured_mib']} MiB, predicted {pred:.0f} MiB" if pred is not None else f"{name}: {outcome}")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fork", default="llama.cpp", choices=["llama.cpp", "ik_llama.cpp"])
    ap.add_argument("--server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--name", required=True, help="the model's short name, in the cases' names")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ctx", type=int, nargs="+", default=[32768, 131072])
    ap.add_argument("--ubatch", type=int, nargs="+", default=[512, 4096])
    ap.add_argument("--parallel", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--gpus", default="24")
    ap.add_argument("--ram", type=float, default=100)
    ap.add_argument("--cache-type", default="f16")
    ap.add_argument("--prompt", type=int, default=3000, help="prompt tokens (token ids)")
    ap.add_argument("--n-vocab", type=int, default=150000)
    ap.add_argument("--start-timeout", type=float, default=240)
    ap.add_argument("--request-timeout", type=float, default=150)
    ap.add_argument("--server-arg", action="append", default=[], help="one more llama-server argument (repeat)")
    ap.add_argument("--deadline", type=float, default=0, help="epoch seconds: no case starts within 60 s of it")
    args = ap.parse_args(argv)
    args.deadline = args.deadline or time.time() + 24 * 3600
    os.makedirs(args.out, exist_ok=True)
    for ctx in args.ctx:
        for ubatch in args.ubatch:
            for parallel in args.parallel:
                name = f"{args.fork}-{args.name}-c{ctx // 1024}k-ub{ubatch}-np{parallel}-{args.cache_type}"
                path = os.path.join(args.out, f"{name}.json")
                if os.path.exists(path):
                    continue  # measured in an earlier call
                if time.time() > args.deadline - 60:
                    log(f"{name}: skipped (deadline)")
                    continue
                doc = run_case(args, name, ctx, ubatch, parallel)
                with open(path + ".tmp", "w") as f:
                    json.dump(doc, f, indent=1)
                os.replace(path + ".tmp", path)
                if doc.get("request_status") == 0 and doc["outcome"] != "serves":
                    log(f"{name}: the server took the request and never answered: the other cases of this "
                        f"build are not run (its threads' stacks are in {path})")
                    return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
