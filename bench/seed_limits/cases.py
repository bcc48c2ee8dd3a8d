"""Run the benchmark's cases on one GPU: one llama-server per case, one after the other.

    python bench/seed_limits/cases.py --server BIN --model MODEL.gguf --pred PRED_DIR --out CASES_DIR
        [--ctx 16384 65536] [--deadline EPOCH] [--start-timeout 180] [--port 18180]

Cases, interleaved by context: seed-ctxN (the seed's ``-ngl 99 -ot '\\.ffn_.*_exps.=CPU'``, every
expert on the CPU) then planned-ctxN (the flags of PRED_DIR/planned-N.json, written by predict.py).
Both with ``--flash-attn on``, q8_0 K and V and ``--verbosity 4`` (so that llama-server prints its
memory breakdown table when it exits).

Each case: start the server (stdout+stderr to CASES_DIR/CASE.log), sample the GPU (nvidia-smi:
the server's own used_memory and the device's memory.used) and the server's /proc status every
0.5 s, wait for /health 200 or the process's exit, ask one /v1/chat/completions (a ~660-token
prompt, so one full 512-token ubatch runs, then 8 tokens), stop it with SIGTERM (the breakdown is
printed on a clean exit), SIGKILL after 25 s. What was seen goes to CASES_DIR/CASE.json; collect.py
parses the logs and writes the result. A case that would run past --deadline is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

SEED_ARGS = ["--n-gpu-layers", "99", "--override-tensor", r"\.ffn_.*_exps.=CPU"]
COMMON_ARGS = ["--flash-attn", "on", "--verbosity", "4", "--log-colors", "off"]
PROMPT = ("Here is a list of colours, fruits and numbers to repeat back in the same order, without comments: "
          + ", ".join(f"{c} {f} {n}" for n, (c, f) in enumerate(
              [("red", "apple"), ("green", "pear"), ("blue", "plum"), ("yellow", "lemon"),
               ("purple", "grape"), ("orange", "orange"), ("pink", "peach"), ("brown", "date")] * 4))
          + ". Then say hello.")
MAX_TOKENS = 8

_current: subprocess.Popen | None = None


def log(msg: str) -> None:
    print(f"[cases {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _smi(args: list[str]) -> list[list[str]]:
    try:
        r = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[x.strip() for x in line.split(",")] for line in r.stdout.splitlines() if line.strip()]


def _int(x: str) -> int | None:
    try:
        return int(float(x))
    except ValueError:
        return None


def gpu_state(index: int) -> dict:
    """memory.used / free / total (MiB) of GPU `index`, and used_memory (MiB) of every compute process."""
    out: dict = {"t": time.time()}
    rows = _smi([f"--id={index}", "--query-gpu=memory.used,memory.free,memory.total", "--format=csv,noheader,nounits"])
    if rows and len(rows[0]) >= 3:
        out["used"], out["free"], out["total"] = (_int(v) for v in rows[0][:3])
    apps = _smi([f"--id={index}", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    out["apps"] = {r[0]: _int(r[1]) for r in apps if len(r) >= 2}
    return out


def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


class Sampler(threading.Thread):
    """Samples the GPU and the server's memory until stopped; keeps peaks and phase snapshots."""

    def __init__(self, pid: int, gpu: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.gpu, self.every = pid, gpu, every
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.n = 0
        self.peak_pid_mib: int | None = None
        self.peak_used_mib: int | None = None
        self.peak_hwm = 0
        self.last: dict = {}
        self.last_proc: dict = {}
        self.pid_seen = False

    def sample(self) -> dict:
        g = gpu_state(self.gpu)
        p = proc_status(self.pid)
        mine = g.get("apps", {}).get(str(self.pid))
        with self.lock:
            self.n += 1
            if mine is not None:
                self.pid_seen = True
                self.peak_pid_mib = max(self.peak_pid_mib or 0, mine)
            if g.get("used") is not None:
                self.peak_used_mib = max(self.peak_used_mib or 0, g["used"])
            if p:
                self.peak_hwm = max(self.peak_hwm, p.get("VmHWM", 0))
                self.last_proc = p
            self.last = {"gpu": g, "pid_mib": mine, "proc": p}
        return self.last

    def run(self) -> None:
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(self.every)

    def snapshot(self) -> dict:
        s = self.sample()
        return {"pid_mib": s["pid_mib"], "used_mib": s["gpu"].get("used"), "free_mib": s["gpu"].get("free"),
                "apps": s["gpu"].get("apps"), "proc": s["proc"]}


def http(url: str, body: dict | None = None, timeout: float = 2.0) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001  (URLError, OSError, timeouts, http.client.HTTPException...)
        return 0, f"{type(e).__name__}: {e}"


def kill_group(pgid: int) -> None:
    """SIGKILL to what is left of a server's process group (started with start_new_session): ggml's abort
    forks gdb for a backtrace, which can hang attached and keeps the dead server's GPU memory through the
    device files it inherited."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop(p: subprocess.Popen, grace: float = 25.0) -> tuple[int | None, str]:
    """SIGTERM, wait, SIGKILL, then the rest of its process group. Returns (exit code, how it ended:
    already-exited, sigterm or sigkill)."""
    if p.poll() is not None:
        kill_group(p.pid)
        return p.returncode, "already-exited"
    try:
        p.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(grace)
        kill_group(p.pid)
        return p.returncode, "sigterm"
    except subprocess.TimeoutExpired:
        log(f"pid {p.pid} still running {grace:.0f} s after SIGTERM: SIGKILL")
        kill_group(p.pid)
        p.wait(10)
        return p.returncode, "sigkill"


def run_case(name: str, placement: str, ctx: int, argv: list[str], port: int, logpath: str, gpu: int,
             start_timeout: float, deadline: float, pidfile: str | None) -> dict:
    global _current
    meta: dict = {"case": name, "placement": placement, "ctx": ctx, "argv": argv, "port": port, "log": logpath}
    meta["before"] = {k: v for k, v in gpu_state(gpu).items() if k != "t"}
    log(f"{name}: GPU before start: used {meta['before'].get('used')} MiB, free {meta['before'].get('free')} MiB")
    log(f"{name}: $ " + " ".join(argv))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
    t0 = time.time()
    with open(logpath, "wb") as lf:
        p = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             start_new_session=True)
    _current = p
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(p.pid))
    sampler = Sampler(p.pid, gpu)
    sampler.start()
    base = f"http://127.0.0.1:{port}"
    outcome, ready_at = "timeout", None
    while time.time() - t0 < start_timeout:
        if p.poll() is not None:
            outcome = "exited"
            break
        code, _ = http(base + "/health", timeout=2)
        if code == 200:
            ready_at = time.time()
            outcome = "ready"
            break
        time.sleep(0.5)
    meta["start_s"] = round((ready_at or time.time()) - t0, 2)
    if outcome == "ready":
        meta["at_ready"] = sampler.snapshot()
        log(f"{name}: /health 200 after {meta['start_s']} s; server on GPU {meta['at_ready']['pid_mib']} MiB "
            f"(device used {meta['at_ready']['used_mib']} MiB)")
        body = {"messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS, "temperature": 0.0,
                "stream": False}
        t1 = time.time()
        request_timeout = max(15.0, min(120.0, deadline - t1 - 10))
        code, text = http(base + "/v1/chat/completions", body, timeout=request_timeout)
        meta["request_s"] = round(time.time() - t1, 2)
        meta["request_status"] = code
        try:
            doc = json.loads(text)
        except ValueError:
            doc = {"raw": text[:500]}
        meta["response"] = {"content": (((doc.get("choices") or [{}])[0].get("message") or {}).get("content")),
                            "finish_reason": (doc.get("choices") or [{}])[0].get("finish_reason"),
                            "usage": doc.get("usage"), "timings": doc.get("timings"),
                            "error": doc.get("error") or doc.get("raw")}
        if code == 200 and doc.get("choices"):
            outcome = "serves"
        else:
            outcome = "exited" if p.poll() is not None else "request-failed"
        meta["after_request"] = sampler.snapshot()
        log(f"{name}: completion HTTP {code} in {meta['request_s']} s: {json.dumps(meta['response'])[:400]}")
        log(f"{name}: after the request: server on GPU {meta['after_request']['pid_mib']} MiB "
            f"(device used {meta['after_request']['used_mib']} MiB)")
    elif outcome == "exited":
        log(f"{name}: server exited with {p.returncode} after {meta['start_s']} s, before /health 200")
    else:
        log(f"{name}: no /health 200 within {start_timeout:.0f} s")
    sampler.stop_ev.set()
    sampler.join(5)
    meta["host_before_stop"] = proc_status(p.pid)
    rc, how = stop(p, grace=min(25.0, max(5.0, deadline - time.time())))
    _current = None
    if pidfile and os.path.exists(pidfile):
        os.remove(pidfile)
    meta.update({
        "runner_outcome": outcome, "rc": rc, "stopped": how, "wall_s": round(time.time() - t0, 2),
        "samples": sampler.n, "pid_seen_by_nvidia_smi": sampler.pid_seen,
        "peak_pid_mib": sampler.peak_pid_mib, "peak_used_mib": sampler.peak_used_mib,
        "peak_hwm_bytes": sampler.peak_hwm or None,
    })
    time.sleep(1.0)
    meta["after_exit"] = {k: v for k, v in gpu_state(gpu).items() if k != "t"}
    log(f"{name}: {outcome}; rc {rc}; peak server GPU {sampler.peak_pid_mib} MiB, peak device used "
        f"{sampler.peak_used_mib} MiB (before: {meta['before'].get('used')}), host VmHWM "
        f"{(sampler.peak_hwm or 0) / 2**30:.2f} GiB; device used after exit {meta['after_exit'].get('used')} MiB")
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--pred", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--ctx", type=int, nargs="+", default=[16384, 65536])
    ap.add_argument("--placements", nargs="+", default=["seed", "planned"])
    ap.add_argument("--gpu", type=int, default=0)
    ap.add_argument("--port", type=int, default=18180)
    ap.add_argument("--deadline", type=float, default=0, help="epoch seconds by which the last case must end")
    ap.add_argument("--start-timeout", type=float, default=180)
    ap.add_argument("--min-case-s", type=float, default=50, help="skip a case with less time than this left")
    ap.add_argument("--pidfile")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    def on_signal(signum, _frame):
        if _current is not None and _current.poll() is None:
            try:
                os.killpg(_current.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    deadline = args.deadline or (time.time() + 3600)
    port = args.port
    for ctx in args.ctx:
        for placement in args.placements:
            name = f"{placement}-ctx{ctx}"
            meta_path = os.path.join(args.out, name + ".json")
            if placement == "seed":
                flags = ["--ctx-size", str(ctx), "--cache-type-k", "q8_0", "--cache-type-v", "q8_0"] + SEED_ARGS
            else:
                try:
                    with open(os.path.join(args.pred, f"{placement}-{ctx}.json")) as f:
                        flags = list(json.load(f)["args"])
                except (OSError, ValueError, KeyError) as exc:
                    log(f"{name}: not run, no plan to take the flags from ({exc})")
                    port += 1
                    continue
            server_argv = [args.server, "--model", args.model, "--host", "127.0.0.1", "--port", str(port)] \
                + COMMON_ARGS + flags
            left = deadline - time.time()
            if left < args.min_case_s:
                log(f"{name}: skipped, {left:.0f} s left before the deadline")
                meta = {"case": name, "placement": placement, "ctx": ctx, "argv": server_argv,
                        "runner_outcome": "skipped"}
            else:
                start_timeout = min(args.start_timeout, left - 30)
                try:
                    meta = run_case(name, placement, ctx, server_argv, port, os.path.join(args.out, name + ".log"),
                                    args.gpu, start_timeout, deadline, args.pidfile)
                except Exception as exc:  # noqa: BLE001  (one broken case must not stop the others)
                    log(f"{name}: runner error {type(exc).__name__}: {exc}")
                    if _current is not None and _current.poll() is None:
                        os.killpg(_current.pid, signal.SIGKILL)
                    meta = {"case": name, "placement": placement, "ctx": ctx, "argv": server_argv,
                            "runner_outcome": "runner-error", "error": f"{type(exc).__name__}: {exc}"}
            with open(meta_path, "w") as f:
                json.dump(meta, f, indent=2)
            port += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
