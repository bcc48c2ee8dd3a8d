"""The planner's predictions for the benchmark's cases, one JSON file per case.

    python bench/seed_limits/predict.py MODEL.gguf OUTDIR --ctx 16384 65536 [--gpus 24] [--ram 100]

For each context N it writes
  OUTDIR/planned-N.json  the output of ``python -m llamarig plan MODEL --gpus 24 --ram 100 --ctx N
                         --cache-type q8_0 --json`` (llamarig's own plan: fits, reason, devices,
                         host, args), run as a subprocess exactly as a user would;
  OUTDIR/seed-N.json     the same table for the seed's hand-written flags (``-ngl 99
                         -ot '\\.ffn_.*_exps.=CPU'``), from ``llamarig.planner.plan.evaluate``: the check the
                         planner applies to a service with hand-written placement flags (the CLI
                         reaches it only through an inventory, hence the API here).
Both use the same Settings (q8_0 K and V, flash attention on, ubatch 512, automatic slots) and the
same 1024 MiB per-GPU margin.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

SEED_OT = r"\.ffn_.*_exps."
SEED_NGL = 99


def seed_table(model_path: str, ctx: int, gpus_gib: list[float], ram_gib: float, margin_mib: int) -> dict:
    from llamarig.planner.gguf import read_model
    from llamarig.planner.memory import GiB, MiB, Settings
    from llamarig.planner.placement import Flags
    from llamarig.planner.plan import evaluate

    model = read_model(model_path)
    s = Settings(fork="llama.cpp", ctx=ctx, cache_k="q8_0", cache_v="q8_0", ubatch=512, flash_attn=True)
    flags = Flags(n_devices=len(gpus_gib), n_gpu_layers=SEED_NGL, overrides=[(SEED_OT, "CPU")])
    p = evaluate(model, flags, [int(g * GiB) for g in gpus_gib], int(ram_gib * GiB), s, margin_mib * MiB)
    args = ["--ctx-size", str(ctx), "--cache-type-k", "q8_0", "--cache-type-v", "q8_0",
            "--n-gpu-layers", str(SEED_NGL), "--override-tensor", f"{SEED_OT}=CPU"]
    return p.to_json(args)


def planned_table(model_path: str, ctx: int, gpus_gib: list[float], ram_gib: float, margin_mib: int) -> dict:
    cmd = [sys.executable, "-m", "llamarig", "plan", model_path,
           "--gpus", ",".join(f"{g:g}" for g in gpus_gib), "--ram", f"{ram_gib:g}", "--ctx", str(ctx),
           "--cache-type", "q8_0", "--json"]
    if margin_mib != 1024:
        cmd[-1:-1] = ["--margin-mib", str(margin_mib)]
    print("predict: $ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if r.stderr:
        print(r.stderr, end="", file=sys.stderr)
    if r.returncode not in (0, 1):  # 1: the plan does not fit (still a JSON answer)
        raise SystemExit(f"predict: llamarig plan exited {r.returncode}")
    return json.loads(r.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("outdir")
    ap.add_argument("--ctx", type=int, nargs="+", required=True)
    ap.add_argument("--gpus", type=float, nargs="+", default=[24.0])
    ap.add_argument("--ram", type=float, default=100.0)
    ap.add_argument("--margin-mib", type=int, default=1024)
    args = ap.parse_args(argv)
    os.makedirs(args.outdir, exist_ok=True)
    for ctx in args.ctx:
        for kind, fn in (("seed", seed_table), ("planned", planned_table)):
            doc = fn(args.model, ctx, args.gpus, args.ram, args.margin_mib)
            path = os.path.join(args.outdir, f"{kind}-{ctx}.json")
            with open(path, "w") as f:
                json.dump(doc, f, indent=2)
            devs = ", ".join(f"{d['name']} {d['total'] / 2**30:.2f} GiB (w {d['weights'] / 2**30:.2f} "
                             f"kv {d['kv'] / 2**30:.2f} c {d['compute'] / 2**30:.2f})" for d in doc["devices"])
            print(f"predict: {kind} ctx {ctx}: fits={doc['fits']} {devs}; host {doc['host']['total'] / 2**30:.2f} GiB"
                  + (f"; {doc['reason']}" if doc["reason"] else ""), flush=True)
            print("predict:   args: " + " ".join(doc["args"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
