"""A stand-in llama-server *program* for the tune engine's tests: parses the arguments a candidate gets,
serves /health, /props, /slots, /tokenize and /completion on --host/--port, and answers at speeds that
follow its flags, so a test knows which candidate must win:

  decode t/s  = FAKE_DECODE_BASE (50) + 10 * --threads (when given)        prefill t/s = 40 * --ubatch-size
  --ubatch-size >= FAKE_OOM_UBATCH (default: never): prints a CUDA out-of-memory line and exits 1
  a flag in FAKE_REFUSE (comma-separated): prints "error: invalid argument" and exits 1
  FAKE_LOAD_S (0.2): seconds before /health answers 200 (503 until then)
  a flag in FAKE_HANG (comma-separated): /completion never answers (a server that hangs once loaded)
  a flag in FAKE_CRASH (comma-separated), or FAKE_CRASH_UNLESS set and that flag not given: /completion
      prints a CUDA error, forks a child that lives on (as ggml's abort forks gdb; its pid in
      FAKE_CHILD_PIDFILE when set) and never answers, or with FAKE_CRASH_MODE=exit the child ends at once
      and the server aborts (exit 134)
  FAKE_HOLD_FILE: a file it keeps open (as a CUDA process keeps /dev/nvidia*; a forked child inherits it)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def value(argv, *names, default=None):
    for i, word in enumerate(argv):
        if word in names and i + 1 < len(argv):
            return argv[i + 1]
    return default


def main(argv):
    for flag in filter(None, os.environ.get("FAKE_REFUSE", "").split(",")):
        if flag in argv:
            print(f"error: invalid argument: {flag}", flush=True)
            return 1
    ubatch = int(value(argv, "--ubatch-size", "-ub", default=512))
    if ubatch >= int(os.environ.get("FAKE_OOM_UBATCH", "1000000000")):
        print("ggml_backend_cuda_buffer_type_alloc_buffer: allocating 9000.00 MiB on device 0: "
              "cudaMalloc failed: out of memory", flush=True)
        return 1
    threads = value(argv, "--threads", "-t")
    decode = float(os.environ.get("FAKE_DECODE_BASE", "50")) + (10 * int(threads) if threads else 0)
    prefill = 40.0 * ubatch
    hangs = any(flag in argv for flag in filter(None, os.environ.get("FAKE_HANG", "").split(",")))
    crashes = any(flag in argv for flag in filter(None, os.environ.get("FAKE_CRASH", "").split(",")))
    if os.environ.get("FAKE_CRASH_UNLESS") and os.environ["FAKE_CRASH_UNLESS"] not in argv:
        crashes = True
    held = open(os.environ["FAKE_HOLD_FILE"]) if os.environ.get("FAKE_HOLD_FILE") else None  # noqa: F841, SIM115
    ready_at = time.monotonic() + float(os.environ.get("FAKE_LOAD_S", "0.2"))
    ctx = int(value(argv, "--ctx-size", "-c", default=4096))
    print(f"fake llama-server: {' '.join(argv)}", flush=True)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":
                ok = time.monotonic() >= ready_at
                return self.answer(200 if ok else 503, {"status": "ok"} if ok else {"error": "Loading model"})
            if self.path == "/props":
                return self.answer(200, {"default_generation_settings": {"n_ctx": ctx}, "total_slots": 1,
                                         "model_path": value(argv, "--model", "-m")})
            if self.path == "/slots":
                return self.answer(200, [{"id": 0, "is_processing": False}])
            return self.answer(404, {})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if self.path == "/tokenize":
                return self.answer(200, {"tokens": [sum(map(ord, w)) % 30000 for w in body["content"].split()]})
            if self.path == "/completion" and crashes:
                print("CUDA error: an illegal memory access was encountered", flush=True)
                print("ggml-cuda.cu:132: CUDA error", flush=True)
                exits = os.environ.get("FAKE_CRASH_MODE") == "exit"
                child = os.fork()
                if child == 0:  # the gdb of ggml's abort: lives on, ignoring SIGINT and SIGTERM (a gdb that
                    if exits:   # fails at once, as session.sh's stub does, with FAKE_CRASH_MODE=exit)
                        os._exit(1)
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                    time.sleep(3600)
                    os._exit(0)
                if os.environ.get("FAKE_CHILD_PIDFILE"):
                    with open(os.environ["FAKE_CHILD_PIDFILE"], "w") as handle:
                        handle.write(str(child))
                if exits:
                    os.waitpid(child, 0)
                    os._exit(134)
                time.sleep(3600)
            if self.path == "/completion" and hangs:
                time.sleep(3600)
            if self.path == "/completion":
                n, gen = len(body["prompt"]), body["n_predict"]
                time.sleep(min(2.0, n / prefill + gen / decode))
                return self.answer(200, {"content": "x", "timings": {
                    "cache_n": 0, "prompt_n": n, "prompt_ms": n / prefill * 1000, "predicted_n": gen,
                    "predicted_ms": gen / decode * 1000, "prompt_per_second": prefill,
                    "predicted_per_second": decode}})
            return self.answer(404, {})

    server = ThreadingHTTPServer((value(argv, "--host", default="127.0.0.1"), int(value(argv, "--port"))), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGINT, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
