"""A small fake llama-server on a free loopback port: /health, /props, /v1/chat/completions, and for the
bench program /slots, /tokenize (one token per word) and /completion (timings from a fixed speed).

Configurable while it runs: the /health status sequence (each request takes the next one, the
last one repeats), the /props body, the completion's status and body, and an API key every
request must send (401 without it). Every request is recorded (method, path, Authorization, body).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL_PATH = "/var/lib/llamarig/models/gemma/0123456789ab/gemma-Q4_K_M.gguf"


def llama_props(n_ctx=4096, slots=1, alias="gemma", model_path=MODEL_PATH, temperature=0.6, top_p=0.95) -> dict:
    """/props as llama.cpp answers it: sampling nested under default_generation_settings.params."""
    return {"default_generation_settings": {"n_ctx": n_ctx,
                                            "params": {"temperature": temperature, "top_p": top_p, "top_k": 40}},
            "total_slots": slots, "model_path": model_path, "model_alias": alias}


def ik_props(n_ctx=4096, slots=1, alias="gemma", model_path=MODEL_PATH, temperature=0.6, top_p=0.95) -> dict:
    """/props as ik_llama.cpp answers it: sampling directly in default_generation_settings."""
    return {"default_generation_settings": {"n_ctx": n_ctx, "temperature": temperature, "top_p": top_p},
            "total_slots": slots, "model_path": model_path, "model_alias": alias}


def completion(content=" Hello there, friend! ", tokens=5, per_second=42.5, reasoning=None) -> dict:
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    body = {"object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}}
    if per_second is not None:
        body["timings"] = {"predicted_per_second": per_second}
    return body


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None
    body: dict | None


@dataclass
class Config:
    health: list = field(default_factory=lambda: [200])
    props: dict = field(default_factory=llama_props)
    props_status: int = 200
    completion: object = field(default_factory=completion)  # a dict (sent as JSON) or raw text
    completion_status: int = 200
    api_key: str | None = None
    slots: list | None = None          # /slots' body; None: 501, as a server started with --no-slots
    prefill_tps: float = 1000.0        # /completion's timings
    decode_tps: float = 50.0


class FakeLlamaServer:
    def __init__(self, **config):
        self.config = Config(**config)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def answer(self, status, body):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def handle_one(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = {"unparsed": raw.decode("utf-8", "replace")}
                auth = self.headers.get("Authorization")
                with fake.lock:
                    fake.seen.append(Seen(method, self.path, auth, body))
                cfg = fake.config
                if cfg.api_key is not None and auth != f"Bearer {cfg.api_key}":
                    return self.answer(401, {"error": {"code": 401, "message": "Invalid API Key",
                                                       "type": "authentication_error"}})
                if method == "GET" and self.path == "/health":
                    status = cfg.health.pop(0) if len(cfg.health) > 1 else cfg.health[0]
                    return self.answer(status, {"status": "ok"} if status == 200 else
                                       {"error": {"code": status, "message": "Loading model"}})
                if method == "GET" and self.path == "/props":
                    return self.answer(cfg.props_status, cfg.props)
                if method == "POST" and self.path == "/v1/chat/completions":
                    return self.answer(cfg.completion_status, cfg.completion)
                if method == "GET" and self.path == "/slots":
                    if cfg.slots is None:
                        return self.answer(501, {"error": {"code": 501, "message": "This server does not "
                                                           "support slots endpoint."}})
                    return self.answer(200, cfg.slots)
                if method == "POST" and self.path == "/tokenize":
                    words = body["content"].split()
                    return self.answer(200, {"tokens": [sum(map(ord, w)) % 30000 for w in words]})
                if method == "POST" and self.path == "/completion":
                    n, gen = len(body["prompt"]), body["n_predict"]
                    time.sleep(n / cfg.prefill_tps + gen / cfg.decode_tps)  # as long as its timings say
                    return self.answer(200, {"content": "x" * gen, "timings": {
                        "cache_n": 0, "prompt_n": n, "prompt_ms": n / cfg.prefill_tps * 1000,
                        "predicted_n": gen, "predicted_ms": gen / cfg.decode_tps * 1000,
                        "prompt_per_second": cfg.prefill_tps, "predicted_per_second": cfg.decode_tps}})
                return self.answer(404, {"error": {"code": 404, "message": "File Not Found"}})

            def do_GET(self):
                self.handle_one("GET")

            def do_POST(self):
                self.handle_one("POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def paths(self, method=None) -> list[str]:
        with self.lock:
            return [s.path for s in self.seen if method is None or s.method == method]
