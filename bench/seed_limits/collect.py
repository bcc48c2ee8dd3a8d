"""Parse the cases' llama-server logs and runner records; write seed-limits-1gpu.json.

    python bench/seed_limits/collect.py --cases CASES_DIR --pred PRED_DIR --out OUT.json
        [--ctx 16384 65536] [--placements seed planned]

One object per case and device (CUDA0, host):
  case, placement, device, predicted, measured, outcome   (bytes or null; outcome below)
and, to read the numbers: ctx, oom_device, predicted_detail (weights/kv/compute/budget from the
planner), measured_source, llama_cpp (the server's own accounting: the model/KV/compute/output
buffer sizes printed at load, and the memory breakdown table printed at exit, in bytes), nvidia_smi
(peak of the server's used_memory, device memory.used before/peak), start_s, request_s, args.

measured, CUDA0: the peak used_memory nvidia-smi reported for the server's pid (CUDA context, cuBLAS
workspace and pools included: what the card really loses); when nvidia-smi does not list the pid
(another PID namespace), the peak device memory.used minus memory.used before the start.
measured, host: the server's resident set after the request (VmRSS: anonymous memory plus the
mmap'd weights it touched; the peak VmHWM is kept too, but it also counts the file pages of the GPU
tensors that the loader read through the mapping and then unmapped).

outcome: "serves" (a completion came back), "oom" (the log shows an allocation failure; oom_device
says where), "error" (exited or failed otherwise), "timeout" (no /health 200 in time),
"skipped" (no time left), "not-run" (no record: build failed or the run was cut short).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

MiB = 1 << 20

# ik_llama.cpp names no kind for the weights' buffers ("llm_load_tensors:      CUDA0 buffer size = ...")
BUF = re.compile(r"(?P<func>[A-Za-z_0-9]+):\s+(?P<name>\S+)\s+(?:(?P<kind>model|KV|compute|output|RS)\s+)?buffer size =\s*"
                 r"(?P<mib>[0-9.]+) MiB")
BREAK_GPU = re.compile(r"\|\s*-\s*(?P<name>CUDA\d+) \((?P<desc>[^)]*)\)\s*\|\s*(?P<total>\d+)\s*=\s*(?P<free>\d+)\s*\+\s*"
                       r"\(\s*(?P<self>\d+)\s*=\s*(?P<model>\d+)\s*\+\s*(?P<context>\d+)\s*\+\s*(?P<compute>\d+)\s*\)"
                       r"\s*\+\s*(?P<unaccounted>-?\d+)\s*\|")
BREAK_OTHER = re.compile(r"\|\s*-\s*(?P<name>[A-Za-z_0-9]+)\s*\|\s*(?P<self>\d+)\s*=\s*(?P<model>\d+)\s*\+\s*"
                         r"(?P<context>\d+)\s*\+\s*(?P<compute>\d+)\s*\|")
FIT = re.compile(r"projected to use (\d+) MiB of (?:device|host) memory vs\. (\d+) MiB of (?:free device|total host) memory")
SESSION = re.compile(r"loaded meta data with \d+ key-value pairs")
OOM_PATTERNS = [
    # (regex, device group or fixed device)
    (re.compile(r"allocating [0-9.]+ MiB on device (\d+): cudaMalloc failed"), "cuda"),
    (re.compile(r"failed to allocate (CUDA\d+) buffer"), "name"),
    (re.compile(r"unable to allocate (CUDA\d+) buffer"), "name"),
    (re.compile(r"CUDA error: out of memory"), "current"),
    (re.compile(r"failed to allocate (CUDA_Host|CPU\w*) buffer"), "host"),
    (re.compile(r"unable to allocate (CUDA_Host|CPU\w*) buffer"), "host"),
    (re.compile(r"std::bad_alloc|Cannot allocate memory|cudaMallocHost.*failed"), "host"),
    (re.compile(r"failed to allocate buffer for kv cache|failed to allocate compute (pp|tg) buffers"), "unknown"),
]
OOM_SIZE = re.compile(r"allocating ([0-9.]+) MiB|buffer of size (\d+)")
CURRENT_DEV = re.compile(r"current device: (\d+)")


def device_of(buffer_name: str) -> str:
    """CUDA0, CUDA1... for device buffers; host for CPU, CPU_Mapped, CPU_REPACK, CUDA_Host (pinned)..."""
    return buffer_name if re.fullmatch(r"CUDA\d+", buffer_name) else "host"


def parse_log(text: str) -> dict:
    """What llama.cpp says about its memory: buffers of the last load, the exit breakdown, an OOM."""
    starts = [m.start() for m in SESSION.finditer(text)]
    last = text[starts[-1]:] if starts else text
    buffers = []
    for m in BUF.finditer(last):
        buffers.append({"func": m["func"], "name": m["name"], "kind": (m["kind"] or "model").lower(),
                        "bytes": int(round(float(m["mib"]) * MiB))})
    per_dev: dict[str, dict[str, int]] = {}
    compute_last: dict[str, int] = {}
    for b in buffers:
        if b["kind"] == "compute":  # printed at each reserve: the last print per buffer type counts
            compute_last[b["name"]] = b["bytes"]
            continue
        d = per_dev.setdefault(device_of(b["name"]), {})
        d[b["kind"]] = d.get(b["kind"], 0) + b["bytes"]
    for name, n in compute_last.items():
        d = per_dev.setdefault(device_of(name), {})
        d["compute"] = d.get("compute", 0) + n
    for d in per_dev.values():
        d["total"] = sum(v for k, v in d.items() if k != "total")
    # the exit table; with --fit on, a projected table is printed before the load too: only the last
    # load's part of the log counts
    breakdown: dict[str, dict] = {}
    for m in BREAK_GPU.finditer(last):
        breakdown[m["name"]] = {k: int(m[k]) * MiB for k in
                                ("total", "free", "self", "model", "context", "compute", "unaccounted")}
        breakdown[m["name"]]["description"] = m["desc"].strip()
    for m in BREAK_OTHER.finditer(last):
        key = "host" if m["name"] == "Host" else m["name"]
        breakdown[key] = {k: int(m[k]) * MiB for k in ("self", "model", "context", "compute")}
    fit = None
    for m in FIT.finditer(text):  # llama.cpp's own --fit projection (printed at -lv 4 when --fit is on)
        fit = {"projected_used": int(m.group(1)) * MiB, "free": int(m.group(2)) * MiB}
    return {"buffers": per_dev, "breakdown": breakdown, "fit_projection": fit, "oom": find_oom(text)}


def find_oom(text: str) -> dict | None:
    for pattern, how in OOM_PATTERNS:
        m = pattern.search(text)
        if not m:
            continue
        line = text[text.rfind("\n", 0, m.start()) + 1: text.find("\n", m.end()) if text.find("\n", m.end()) >= 0 else None]
        if how == "cuda":
            dev = f"CUDA{m.group(1)}"
        elif how == "name":
            dev = m.group(1)
        elif how == "current":
            c = CURRENT_DEV.search(text, m.start())
            dev = f"CUDA{c.group(1)}" if c else "CUDA0"
        elif how == "host":
            dev = "host"
        else:
            dev = None
        size = OOM_SIZE.search(line)
        want = None
        if size:
            want = int(round(float(size.group(1)) * MiB)) if size.group(1) else int(size.group(2))
        return {"device": dev, "line": line.strip()[:300], "alloc_bytes": want}
    return None


def outcome_of(meta: dict | None, parsed: dict | None) -> tuple[str, str | None]:
    if meta is None:
        return "not-run", None
    ro = meta.get("runner_outcome")
    if ro == "skipped":
        return "skipped", None
    if ro == "serves":
        return "serves", None
    oom = (parsed or {}).get("oom")
    if oom:
        return "oom", oom["device"]
    if ro == "timeout":
        return "timeout", None
    if meta.get("rc") == -9 and meta.get("stopped") == "already-exited":
        # died of a SIGKILL the runner did not send: most likely the kernel's OOM killer
        return "oom", "host"
    return "error", None


def rows_for_case(name: str, placement: str, ctx: int, meta: dict | None, log_text: str | None,
                  pred: dict | None, devices=("CUDA0",)) -> list[dict]:
    parsed = parse_log(log_text) if log_text is not None else None
    outcome, oom_dev = outcome_of(meta, parsed)
    rows = []
    for dev in list(devices) + ["host"]:
        row = {"case": name, "placement": placement, "device": dev, "predicted": None, "measured": None,
               "outcome": outcome, "oom_device": oom_dev, "ctx": ctx}
        if pred:
            if dev == "host":
                row["predicted"] = pred["host"]["total"]
                row["predicted_detail"] = {"weights": pred["host"]["weights"], "total": pred["host"]["total"]}
            else:
                d = next((x for x in pred["devices"] if x["name"] == dev), None)
                if d:
                    row["predicted"] = d["total"]
                    row["predicted_detail"] = {k: d[k] for k in ("weights", "kv", "compute", "budget")}
            row["predicted_fits"] = pred["fits"]
            row["args"] = pred["args"] if placement == "planned" else None
        if meta and meta.get("runner_outcome") not in (None, "skipped"):
            row["start_s"] = meta.get("start_s")
            row["request_s"] = meta.get("request_s")
            if dev == "host":
                after = ((meta.get("after_request") or {}).get("proc") or {})
                rss = after.get("VmRSS") or (meta.get("host_before_stop") or {}).get("VmRSS")
                row["measured"] = rss
                row["measured_source"] = "VmRSS of the server after the request" if rss else None
                row["host_status"] = {"after_request": after or None, "before_stop": meta.get("host_before_stop"),
                                      "peak_VmHWM": meta.get("peak_hwm_bytes")}
            else:
                before = (meta.get("before") or {}).get("used")
                peak_used = meta.get("peak_used_mib")
                smi = {"peak_server_mib": meta.get("peak_pid_mib"), "device_used_before_mib": before,
                       "device_used_peak_mib": peak_used,
                       "at_ready_server_mib": (meta.get("at_ready") or {}).get("pid_mib"),
                       "after_request_server_mib": (meta.get("after_request") or {}).get("pid_mib")}
                row["nvidia_smi"] = smi
                if meta.get("peak_pid_mib"):
                    row["measured"] = meta["peak_pid_mib"] * MiB
                    row["measured_source"] = "nvidia-smi used_memory of the server pid (peak)"
                elif peak_used is not None and before is not None and peak_used > before:
                    row["measured"] = (peak_used - before) * MiB
                    row["measured_source"] = "nvidia-smi memory.used peak minus before start"
        if parsed:
            row["llama_cpp"] = {"buffers": parsed["buffers"].get(dev), "breakdown": parsed["breakdown"].get(dev)}
            if dev != "host" and parsed["fit_projection"]:
                row["llama_cpp"]["fit_projection"] = parsed["fit_projection"]
            if parsed["oom"]:
                row["oom_line"] = parsed["oom"]["line"]
                row["oom_alloc_bytes"] = parsed["oom"]["alloc_bytes"]
        if meta and meta.get("response"):
            row["response"] = meta["response"].get("content")
        rows.append(row)
    return rows


def collect(cases_dir: str, pred_dir: str, ctxs: list[int], placements: list[str]) -> list[dict]:
    out = []
    for ctx in ctxs:
        for placement in placements:
            name = f"{placement}-ctx{ctx}"
            meta = _load_json(os.path.join(cases_dir, name + ".json"))
            pred = _load_json(os.path.join(pred_dir, f"{placement}-{ctx}.json"))
            log_path = os.path.join(cases_dir, name + ".log")
            text = open(log_path, encoding="utf-8", errors="replace").read() if os.path.exists(log_path) else None
            out += rows_for_case(name, placement, ctx, meta, text, pred)
    return out


def _load_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _gib(n) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def table(rows: list[dict]) -> str:
    lines = [f"{'case':22} {'device':6} {'predicted GiB':>13} {'measured GiB':>12} {'llama.cpp self GiB':>18}  outcome"]
    for r in rows:
        bd = ((r.get("llama_cpp") or {}).get("breakdown") or {}).get("self")
        bufs = ((r.get("llama_cpp") or {}).get("buffers") or {}).get("total")
        own = bd if bd is not None else bufs
        oc = r["outcome"] + (f" ({r['oom_device']})" if r.get("oom_device") else "")
        lines.append(f"{r['case']:22} {r['device']:6} {_gib(r['predicted']):>13} {_gib(r['measured']):>12} "
                     f"{_gib(own):>18}  {oc}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ctx", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--placements", nargs="+", default=["seed", "planned"])
    args = ap.parse_args(argv)
    rows = collect(args.cases, args.pred, args.ctx, args.placements)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
    print(table(rows))
    print(f"collect: {len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
