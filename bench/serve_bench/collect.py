"""Turn the device run's rounds.jsonl files into bench/results/serve-bench-h200.json (and its chart).

    python bench/serve_bench/collect.py ROUNDS.jsonl [ROUNDS2.jsonl ...] --out bench/results/serve-bench-h200.json \
        [--png bench/results/serve-bench-h200.png] [--env env.txt ...] [--server-log server.log]

Per depth, for prefill and decode, and per tool: mean, sd, coefficient of variation, n and every
sample (tokens/s). The rig bench (rig_programs/llamarig-bench.py, through llama-server) against
llama-bench: prefill of depth d = the rig's prompt_n/prompt_ms of a d-token prompt from an empty
context against llama-bench's ``pp d`` at depth 0; decode after d = the rig's generated tokens over
predicted_ms against llama-bench's ``tg N @ d``. Decode is given two ways for the rig:

* ``decode`` = predicted_n / predicted_ms, the formula the rig's controller is meant to use;
* ``decode_steps`` = (predicted_n - 1) / predicted_ms: this llama-server's predicted_ms runs from
  the first generated token (sampled from the prompt's last logits, no decode step of its own) to
  the last, so it covers predicted_n - 1 decode steps; that is the server's own
  ``predicted_per_second``, and what llama-bench's tg counts (N decode steps in its time).

"Within the noise": |difference of the means| <= 2 standard errors of that difference
(sqrt(sd_a^2/n_a + sd_b^2/n_b)); the difference is also given against one run's sd.

The bench's own cost: per depth, the request's wall time against prompt_ms + predicted_ms (HTTP,
JSON, the server's queue and slot handling: what the server's timings leave out), and per
invocation the program's run time (process start to exit), bench_s, tokenize_s and the time not in
any request. Power and SM clock averaged over each request's span (nvidia-smi samples) are kept.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics as st
import sys
from collections import defaultdict


def stats(xs: list[float]) -> dict:
    xs = [float(x) for x in xs]
    n = len(xs)
    mean = st.fmean(xs) if xs else None
    sd = st.stdev(xs) if n > 1 else None
    return {"n": n, "mean": mean, "sd": sd, "cv": (sd / mean) if sd is not None and mean else None,
            "median": st.median(xs) if xs else None, "min": min(xs) if xs else None,
            "max": max(xs) if xs else None, "samples": xs}


def compare(a: dict, b: dict) -> dict:
    """a (rig) against b (llama-bench)."""
    if not a["n"] or not b["n"]:
        return {}
    diff = a["mean"] - b["mean"]
    se = math.sqrt((a["sd"] or 0) ** 2 / a["n"] + (b["sd"] or 0) ** 2 / b["n"])
    run_sd = max(a["sd"] or 0, b["sd"] or 0)
    return {"diff": diff, "diff_pct": 100 * diff / b["mean"], "se_diff": se,
            "diff_over_se": diff / se if se else None,
            "within_noise": abs(diff) <= 2 * se,
            "diff_over_run_sd": diff / run_sd if run_sd else None}


def read_rounds(paths: list[str]) -> list[dict]:
    recs = []
    for path in paths:
        with open(path) as f:
            recs += [json.loads(line) for line in f if line.strip()]
    return recs


def mean_over(samples: list, t0: float, t1: float, field: int) -> float | None:
    vals = [s[1][field] for s in samples if t0 <= s[0] <= t1 and s[1][field] is not None]
    return st.fmean(vals) if vals else None


def collect(recs: list[dict]) -> dict:
    rig_pp, rig_tg, rig_tg_steps = defaultdict(list), defaultdict(list), defaultdict(list)
    lb_pp, lb_tg = defaultdict(list), defaultdict(list)
    over = defaultdict(list)
    wall = defaultdict(list)
    power = defaultdict(lambda: defaultdict(list))
    problems, invocations, lb_info, rig_info = [], [], None, None
    rounds = sorted({r["round"] for r in recs})
    for rec in recs:
        res, tool = rec.get("result"), rec["tool"]
        span = rec["t_end"] - rec["t_start"]
        inv = {"round": rec["round"], "tool": tool, "rc": rec["rc"], "process_s": round(span, 3)}
        if tool == "rig":
            if not (isinstance(res, dict) and res.get("ok")):
                problems.append(f"round {rec['round']}: rig bench failed: {str(res)[:300]}")
                continue
            rig_info = rig_info or res
            runs = res["runs"]
            in_requests = sum(r["wall_ms"] for r in runs) / 1000
            inv.update(bench_s=res["timing"]["bench_s"], tokenize_s=res["timing"]["tokenize_s"],
                       requests_s=round(in_requests, 3),
                       outside_requests_s=round(span - in_requests, 3),
                       contended_runs=res.get("contended_runs"))
            samples = (res.get("power") or {}).get("samples") or []
            for r in runs:
                d = r["depth"]
                if r["prompt_n"] != d or (r.get("cache_n") or 0) != 0 or r["predicted_n"] is None:
                    problems.append(f"round {rec['round']} depth {d}: prompt_n {r['prompt_n']}, "
                                    f"cache_n {r.get('cache_n')}, predicted_n {r['predicted_n']}")
                if r.get("contended"):
                    problems.append(f"round {rec['round']} depth {d}: marked contended")
                rig_pp[d].append(r["prompt_n"] / r["prompt_ms"] * 1000)
                rig_tg[d].append(r["predicted_n"] / r["predicted_ms"] * 1000)
                rig_tg_steps[d].append((r["predicted_n"] - 1) / r["predicted_ms"] * 1000)
                over[d].append(r["wall_ms"] - r["prompt_ms"] - r["predicted_ms"])
                wall[d].append(r["wall_ms"])
                if samples:
                    t_mid = r["t_start"] + (r["wall_ms"] - r["predicted_ms"]) / 1000  # about where decode starts
                    for key, t0, t1 in (("prefill", r["t_start"], t_mid), ("decode", t_mid, r["t_end"])):
                        for name, field in (("power_w", 0), ("sm_mhz", 2), ("temp_c", 4)):
                            v = mean_over(samples, t0, t1, field)
                            if v is not None:
                                power[d][f"{key}_{name}"].append(v)
        else:
            if not isinstance(res, list):
                problems.append(f"round {rec['round']}: {tool} failed (rc {rec['rc']})")
                continue
            lb_info = lb_info or res[0]
            for t in res:
                if t["n_prompt"] and not t["n_gen"] and not t["n_depth"]:
                    lb_pp[t["n_prompt"]] += t["samples_ts"]
                elif t["n_gen"] and not t["n_prompt"]:
                    lb_tg[t["n_depth"]] += t["samples_ts"]
            inv["tests_s"] = round(sum(sum(t["samples_ns"]) for t in res) / 1e9, 3)
            inv["outside_tests_s"] = round(span - inv["tests_s"], 3)
        invocations.append(inv)

    depths = sorted(set(rig_pp) | set(lb_pp) | set(lb_tg))
    per_depth = {}
    for d in depths:
        a_pp, b_pp = stats(rig_pp[d]), stats(lb_pp[d])
        a_tg, a_tgs, b_tg = stats(rig_tg[d]), stats(rig_tg_steps[d]), stats(lb_tg[d])
        per_depth[str(d)] = {
            "prefill": {"rig": a_pp, "llama_bench": b_pp, "compare": compare(a_pp, b_pp)},
            "decode": {"rig": a_tg, "llama_bench": b_tg, "compare": compare(a_tg, b_tg)},
            "decode_steps": {"rig": a_tgs, "llama_bench": b_tg, "compare": compare(a_tgs, b_tg)},
            "rig_request": {"wall_ms": stats(wall[d]), "wall_minus_timings_ms": stats(over[d])},
            "rig_power": {k: stats(v) for k, v in power[d].items()},
        }
    by_tool = defaultdict(list)
    for inv in invocations:
        by_tool[inv["tool"]].append(inv)
    inv_stats = {}
    for tool, rows in by_tool.items():
        keys = [k for k in rows[0] if k not in ("round", "tool", "rc", "contended_runs")]
        inv_stats[tool] = {k: stats([r[k] for r in rows if r.get(k) is not None]) for k in keys}
        for k in inv_stats[tool]:
            inv_stats[tool][k].pop("samples", None)
    out = {
        "rounds": len(rounds), "round_numbers": rounds,
        "per_depth": per_depth,
        "invocations": {"summary": inv_stats, "each": invocations},
        "problems": problems,
    }
    if rig_info:
        out["rig_bench_spec"] = rig_info.get("spec")
        out["rig"] = {k: rig_info["rig"].get(k) for k in ("cpu", "ram_bytes", "kernel", "python", "gpus",
                                                           "cuda_version", "driver_version")}
        out["server"] = {k: rig_info.get(k) for k in ("n_ctx_slot", "total_slots", "busy_check")} | {
            "build_info": rig_info["server"].get("server_build_info"),
            "model_path": rig_info["server"].get("model_path")}
    if lb_info:
        out["llama_bench"] = {k: lb_info.get(k) for k in (
            "build_commit", "build_number", "gpu_info", "backends", "model_type", "model_size", "model_n_params",
            "n_batch", "n_ubatch", "n_threads", "type_k", "type_v", "n_gpu_layers", "flash_attn", "load_mode")}
    return out


def server_log_gaps(paths: list[str]) -> dict:
    """llama-server's own log: time from 'selected slot' to 'launch_slot_' (the slot's hand-over, where
    the server saves the previous prompt's KV state to its RAM prompt cache), by the previous prompt's
    length; the rig request's wall time holds it, the server's timings do not."""
    import re
    stamp = re.compile(r"^(\d+)\.(\d+)\.(\d+)\.(\d+) ")
    by_prev = defaultdict(list)
    for path in paths:
        prev_n, t_sel = 0, None
        for line in open(path, errors="replace"):
            m = stamp.match(line)
            if not m:
                continue
            t = int(m[1]) * 60 + int(m[2]) + int(m[3]) / 1e3 + int(m[4]) / 1e6
            if "selected slot" in line:
                t_sel = t
            elif "launch_slot_" in line and t_sel is not None:
                by_prev[prev_n].append((t - t_sel) * 1000)
                t_sel = None
            elif "stop processing: n_tokens =" in line:
                prev_n = int(line.split("n_tokens =")[1].split(",")[0])
    out = {}
    for n, gaps in sorted(by_prev.items()):
        s = stats(gaps)
        s.pop("samples")
        out[str(n)] = s
    return out


def read_diag(paths: list[str]) -> dict:
    out = {}
    for path in paths:
        for line in open(path):
            d = json.loads(line)
            if d["diag"] == "sampler":
                by = defaultdict(list)
                for r in d["runs"]:
                    by[r["sampler"]].append((r["predicted_n"] - 1) / r["predicted_ms"] * 1000)
                out["sampler"] = {"depth": d["depth"], "what": "server decode t/s ((n-1)/predicted_ms), "
                                  "default sampler chain against samplers=[top_k], top_k=1, alternated",
                                  "by_sampler": {k: stats(v) for k, v in by.items()}}
            elif d["diag"] == "lb_pp_reversed":
                out["lb_pp_reversed"] = {"argv": d["argv"][3:], "tests": [
                    {"n_prompt": t["n_prompt"], "avg_ts": t["avg_ts"], "stddev_ts": t["stddev_ts"],
                     "samples_ts": t["samples_ts"]} for t in (d["result"] or [])]}
    return out


def fmt(s: dict, digits: int = 0) -> str:
    if not s["n"]:
        return "-"
    sd = f" ± {s['sd']:.{digits}f}" if s["sd"] is not None else ""
    return f"{s['mean']:.{digits}f}{sd}"


def table(res: dict) -> str:
    lines = ["| depth | prefill, rig (t/s) | prefill, llama-bench pp (t/s) | Δ | within noise | "
             "decode, rig (t/s) | decode, llama-bench tg (t/s) | Δ | within noise | n (rig/lb) |",
             "|---:|---:|---:|---:|:--:|---:|---:|---:|:--:|:--:|"]
    for d, v in res["per_depth"].items():
        p, t = v["prefill"], v["decode_steps"]
        lines.append(
            f"| {d} | {fmt(p['rig'])} (cv {100 * (p['rig']['cv'] or 0):.1f}%) | {fmt(p['llama_bench'])} "
            f"(cv {100 * (p['llama_bench']['cv'] or 0):.1f}%) | {p['compare'].get('diff_pct', 0):+.1f}% | "
            f"{'yes' if p['compare'].get('within_noise') else 'no'} | "
            f"{fmt(t['rig'], 1)} (cv {100 * (t['rig']['cv'] or 0):.1f}%) | {fmt(t['llama_bench'], 1)} "
            f"(cv {100 * (t['llama_bench']['cv'] or 0):.1f}%) | {t['compare'].get('diff_pct', 0):+.1f}% | "
            f"{'yes' if t['compare'].get('within_noise') else 'no'} | {p['rig']['n']}/{p['llama_bench']['n']} |")
    return "\n".join(lines)


def chart(res: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    depths = [int(d) for d in res["per_depth"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "prefill", "prefill: d-token prompt from an empty context"),
                           (axes[1], "decode_steps", f"decode: {(res.get('rig_bench_spec') or {}).get('tokens', 'N')} tokens after d tokens of context\n"
                           "(server: (n-1)/predicted_ms)")):
        for tool, label, marker, shift in (("rig", "llamarig bench (llama-server)", "o", 0.97),
                                           ("llama_bench", "llama-bench (-r 1 a run)", "s", 1.03)):
            ys = [res["per_depth"][str(d)][key][tool] for d in depths]
            ax.errorbar([d * shift for d in depths], [y["mean"] for y in ys], yerr=[y["sd"] or 0 for y in ys],
                        marker=marker, capsize=4, label=label, linestyle="-")
        rev = (res.get("diag") or {}).get("lb_pp_reversed", {}).get("tests", [])
        if key == "prefill" and rev:
            later = [(t["n_prompt"], st.fmean(t["samples_ts"][1:])) for t in rev if len(t["samples_ts"]) > 1]
            ax.plot([d * 1.03 for d, _ in later], [y for _, y in later], marker="s", linestyle="none",
                    markerfacecolor="none", color="C1",
                    label="llama-bench, repetitions 2-3 of one -r 3 run (check, n=2)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(depths, [str(d) for d in depths])
        ax.set_xlabel("depth d (tokens)")
        ax.set_ylabel("tokens/s (mean ± sd)")
        ax.set_title(title, fontsize=10)
        top = max(line.get_ydata().max() for line in ax.lines if len(line.get_ydata()))
        ax.set_ylim(0, top * 1.12)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n = res["per_depth"][str(depths[0])]["prefill"]["rig"]["n"]
    fig.suptitle(f"Qwen3-30B-A3B-shaped Q8_0 (synthetic weights), one H200, full offload, FA on: "
                 f"{n} runs per point", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rounds", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--png")
    ap.add_argument("--env", nargs="*", default=[], help="env.txt files (GPU state before/after), kept as text")
    ap.add_argument("--server-log", nargs="*", default=[], help="server.log files: the load lines are kept")
    ap.add_argument("--diag", nargs="*", default=[], help="diag.jsonl files (diag.py)")
    ap.add_argument("--meta", help="a JSON object merged in (the flags, the device minutes, ...)")
    args = ap.parse_args(argv)
    res = collect(read_rounds(args.rounds))
    if args.env:
        res["gpu_state"] = [open(p).read() for p in args.env]
    if args.server_log:
        keep = ("model type", "model params", "file size", "offloaded", "buffer size", "n_ctx", "flash_attn",
                "n_ubatch", "n_batch", "system_info", "n_vocab", "general.description", "CUDA0", "build")
        res["server_slot_handover_ms_by_previous_prompt_tokens"] = server_log_gaps(args.server_log)
        res["server_log"] = [[line.rstrip() for line in open(p, errors="replace") if any(k in line for k in keep)][:60]
                             for p in args.server_log]
    if args.diag:
        res["diag"] = read_diag(args.diag)
    if args.meta:
        res = json.loads(args.meta) | res
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=False)
        f.write("\n")
    print(table(res))
    for tool, s in res["invocations"]["summary"].items():
        print(tool, {k: round(v["mean"], 3) for k, v in s.items() if v.get("mean") is not None})
    for d, v in res["per_depth"].items():
        o = v["rig_request"]["wall_minus_timings_ms"]
        print(f"depth {d}: request wall {v['rig_request']['wall_ms']['mean']:.0f} ms, "
              f"wall - (prompt_ms + predicted_ms) {o['mean']:.1f} ± {o['sd'] or 0:.1f} ms")
    for n, g in (res.get("server_slot_handover_ms_by_previous_prompt_tokens") or {}).items():
        print(f"slot hand-over after a {n}-token slot: {g['mean']:.1f} ± {g['sd'] or 0:.1f} ms (n {g['n']})")
    for k, v in (res.get("diag") or {}).get("sampler", {}).get("by_sampler", {}).items():
        print(f"diag sampler {k}: {fmt(v, 1)} t/s (n {v['n']})")
    for t in (res.get("diag") or {}).get("lb_pp_reversed", {}).get("tests", []):
        print(f"diag lb reversed pp{t['n_prompt']}: {t['samples_ts']}")
    if res["problems"]:
        print("problems:", *res["problems"][:20], sep="\n  ")
    if args.png:
        chart(res, args.png)
        print("chart:", args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
