#!/usr/bin/env python3
"""Measure one running llama-server on this rig and print the raw result as one line of JSON (llamarig).

Run by ``llamarig bench`` inline (``python3 -c "$SOURCE" --spec-json JSON``), or by hand
against any llama-server (``python3 llamarig-bench.py --url http://127.0.0.1:8080 --gpus 0``);
Python's standard library only. It never restarts or reconfigures the server: it
measures the service as it runs, with its own flags.

For each context depth it sends ``/completion`` a prompt of exactly that many tokens of real
text (Python's own documentation, ``pydoc_data.topics``, tokenized by the server; depth 0 is a
one-token prompt) and asks for a fixed number of generated tokens (``ignore_eos``). Each request
starts at another place in the text and sets ``cache_prompt: false``, so nothing is reused from a
cache: the server's ``timings`` must report every prompt token processed, or the run says so.
Repetitions are interleaved (every depth once, then again), so drift spreads over all depths.
Prefill and decode figures are the server's own ``timings``; the request's wall time is kept too.

While it runs, a thread samples ``nvidia-smi`` (power draw, power limit, SM and memory clocks,
temperature) of the service's GPUs only, several times a second, on the same clock as the
requests, so the controller can average watts over each request's prefill and decode.

A server still loading its model (/health 503) is waited for, up to ``load_wait_s``. Before each
request it asks ``/slots`` whether another request is being processed, and waits up to
``busy_wait_s`` for the server to be idle; a server that stays busy is refused (a busy server
measures someone else's load). A request that had to wait, or that finds another slot busy
afterwards, is marked ``contended``. Where ``/slots`` is disabled the result says the busy check
was not possible. The speeds are each fork's own ``prompt_per_second`` and
``predicted_per_second`` (llama.cpp counts decode steps after the first token, which comes from
the prompt's last logits; ik_llama.cpp counts every generated token).

Provenance read here: the unit's state, PID and file digest, the command line the server runs
(secrets masked), the build record of its prefix and the model revision's manifest (their names
are arguments), the GPUs, driver and CUDA version, CPU, RAM and kernel. Environment variables are
never read. Progress lines (``bench: ...``) come first on stdout; the last line is the result.
Exit status: 0 with ``{"ok": true, ...}``, 1 with ``{"ok": false, "error": ...}``.
"""

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

DEFAULTS = {
    "url": "http://127.0.0.1:8080", "api_key_file": None, "unit": None, "gpus": [],
    "depths": [512, 4096, 16384], "repetitions": 3, "tokens": 128, "warmup": 1,
    "fit_depths": False, "busy_wait_s": 30, "load_wait_s": 300, "sample_s": 0.2, "timeout_s": 3600,
    "build_record": ".llamarig-build.json", "manifest": ".llamarig-manifest.json",
}
STRIDE = 1009  # tokens between the starts of two repetitions' prompts
SMI_FIELDS = ["index", "power.draw", "power.limit", "clocks.sm", "clocks.mem", "temperature.gpu", "memory.used"]
SECRET_FLAGS = {"--api-key", "--hf-token", "-hft"}
HTTP_TIMEOUT_S = 30


class Refused(Exception):
    """The server cannot be measured (down, busy, not llama-server): said in words."""


def say(text):
    """Progress, on stdout before the result, so that the controller can show it as it comes."""
    print(f"bench: {text}", flush=True)


# --- HTTP --------------------------------------------------------------------------------------

class Server:
    def __init__(self, url, key):
        self.url, self.key = url.rstrip("/"), key

    def call(self, path, body=None, timeout=HTTP_TIMEOUT_S):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        request.add_header("Content-Type", "application/json")
        if self.key:
            request.add_header("Authorization", "Bearer " + self.key)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"null")
            except ValueError:
                return exc.code, None
            finally:
                exc.close()

    def busy_slots(self):
        """Number of slots processing a request now (llama.cpp's ``is_processing``, ik_llama.cpp's ``state``
        other than idle); None when /slots is not available."""
        try:
            status, slots = self.call("/slots")
        except (OSError, ValueError):
            return None
        if status != 200 or not isinstance(slots, list):
            return None
        return sum(1 for s in slots if isinstance(s, dict) and (s.get("is_processing") or (s.get("state") or 0) != 0))


# --- power sampling ------------------------------------------------------------------------------

def smi(args, timeout=10):
    try:
        out = subprocess.run(["nvidia-smi", *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if out.returncode != 0:
        return None, (out.stderr or out.stdout).strip()[-300:]
    return out.stdout, ""


def number(text):
    try:
        return float(text)
    except ValueError:
        return None  # [N/A], [Not Supported]


class Sampler(threading.Thread):
    """nvidia-smi of the given GPUs every ``interval`` seconds; times on ``clock`` (seconds since t0)."""

    def __init__(self, gpus, interval, t0):
        super().__init__(daemon=True)
        self.gpus, self.interval, self.t0 = gpus, interval, t0
        self.samples, self.errors = [], []
        self.halt = threading.Event()

    def one(self):
        asked = time.monotonic()
        out, err = smi(["--query-gpu=" + ",".join(SMI_FIELDS), "--format=csv,noheader,nounits",
                        "-i", ",".join(map(str, self.gpus))])
        t = (asked + time.monotonic()) / 2 - self.t0  # the reading is of the query's time, not its return
        if out is None:
            self.errors.append(err)
            return
        rows = {}
        for line in out.strip().splitlines():
            cells = [c.strip() for c in line.split(",")]
            if len(cells) == len(SMI_FIELDS) and cells[0].isdigit():
                rows[int(cells[0])] = [number(c) for c in cells[1:]]
        if all(g in rows for g in self.gpus):
            self.samples.append([round(t, 4)] + [rows[g] for g in self.gpus])

    def run(self):
        while not self.halt.is_set():
            started = time.monotonic()
            self.one()
            self.halt.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self):
        self.halt.set()
        self.join(15)
        return {"gpus": self.gpus, "fields": SMI_FIELDS[1:], "samples": self.samples,
                "errors": self.errors[-5:], "error_count": len(self.errors)}


# --- the text ------------------------------------------------------------------------------------

def corpus_text():
    """Real prose: Python's own documentation topics, in a fixed order (same on every rig of a Python)."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def tokens_of(server, text, needed):
    """At least ``needed`` tokens of ``text`` (cycled if shorter), tokenized by the server itself."""
    tokens, chunk, start = [], 32768, 0
    while len(tokens) < needed:
        piece = text[start:start + chunk]
        if not piece:
            if not tokens:
                raise Refused("the text gave no tokens")
            start = 0
            continue
        try:
            status, body = server.call("/tokenize", {"content": piece, "add_special": False}, timeout=120)
        except TimeoutError:
            raise Refused(f"/tokenize gave no answer in 120 s ({len(piece)} characters)") from None
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("tokens"), list):
            raise Refused(f"/tokenize answered {status}: {str(body)[:200]}")
        tokens += [t if isinstance(t, int) else t.get("id") for t in body["tokens"]]
        start += chunk
    return tokens


# --- provenance ----------------------------------------------------------------------------------

def systemd_show(unit):
    out = subprocess.run(["systemctl", "show", unit, "-p", "ActiveState,SubState,MainPID,FragmentPath"],
                         capture_output=True, text=True, timeout=30)
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def masked(argv):
    out, hide = [], False
    for word in argv:
        if hide:
            out.append("***")
            hide = False
            continue
        flag, eq, _ = word.partition("=")
        if flag in SECRET_FLAGS:
            out.append(flag + "=***" if eq else word)
            hide = not eq
        else:
            out.append(word)
    return out


def read_json(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def sha256(path):
    try:
        with open(path, "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except OSError:
        return None


def flag_value(argv, *names):
    for i, word in enumerate(argv):
        flag, eq, value = word.partition("=")
        if flag in names:
            return value if eq else (argv[i + 1] if i + 1 < len(argv) else None)
    return None


def model_manifest(model, name):
    """The manifest of the revision directory holding ``model`` (it may sit in a folder of the revision):
    the revision's commit and each file's size and sha256."""
    directory = os.path.dirname(model)
    for _ in range(8):
        manifest = read_json(os.path.join(directory, name))
        if isinstance(manifest, dict):
            return {k: manifest.get(k) for k in ("repo", "commit", "files")}
        if directory in ("/", ""):
            break
        directory = os.path.dirname(directory)
    return None


def server_facts(spec, props):
    facts = {"unit": spec["unit"], "url": spec["url"]}
    pid = None
    if spec["unit"]:
        shown = systemd_show(spec["unit"])
        pid = int(shown.get("MainPID") or 0) or None
        facts.update(pid=pid, unit_file=shown.get("FragmentPath"),
                     unit_sha256=sha256(shown["FragmentPath"]) if shown.get("FragmentPath") else None)
    argv = None
    if pid:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = [w.decode("utf-8", "replace") for w in handle.read().split(b"\0") if w]
        except OSError:
            argv = None
    facts["argv"] = masked(argv) if argv else None
    binary = os.path.realpath(argv[0]) if argv else None
    if binary:
        prefix = os.path.dirname(os.path.dirname(binary))
        facts["binary"] = binary
        facts["build"] = read_json(os.path.join(prefix, spec["build_record"]))
    model = flag_value(argv or [], "-m", "--model") or (props or {}).get("model_path")
    facts["model_path"] = model
    if model:
        facts["model"] = model_manifest(model, spec["manifest"])
    facts["server_build_info"] = (props or {}).get("build_info")
    return facts


def rig_facts(gpus):
    facts = {"hostname": platform.node(), "kernel": platform.release(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as handle:
            names = [l.split(":", 1)[1].strip() for l in handle if l.startswith("model name")]
        facts["cpu"] = {"model": names[0] if names else platform.machine(), "threads": os.cpu_count()}
    except OSError:
        facts["cpu"] = {"model": platform.machine(), "threads": os.cpu_count()}
    try:
        with open("/proc/meminfo") as handle:
            kib = next(int(l.split()[1]) for l in handle if l.startswith("MemTotal:"))
        facts["ram_bytes"] = kib * 1024
    except (OSError, StopIteration, ValueError):
        facts["ram_bytes"] = None
    if gpus:
        fields = ["index", "name", "uuid", "pci.bus_id", "driver_version", "power.limit", "enforced.power.limit",
                  "power.default_limit", "power.min_limit", "power.max_limit", "memory.total", "persistence_mode"]
        out, err = smi(["--query-gpu=" + ",".join(fields), "--format=csv,noheader,nounits",
                        "-i", ",".join(map(str, gpus))])
        rows = []
        for line in (out or "").strip().splitlines():
            cells = [c.strip() for c in line.split(",")]
            if len(cells) == len(fields):
                row = dict(zip(fields, cells))
                for key in ("power.limit", "enforced.power.limit", "power.default_limit", "power.min_limit",
                            "power.max_limit", "memory.total"):
                    row[key] = number(row[key])
                row["index"] = int(row["index"])
                rows.append(row)
        facts["gpus"] = rows
        if err:
            facts["gpu_error"] = err
        header, _ = smi([])
        match = re.search(r"CUDA Version:\s*([\d.]+)", header or "")
        facts["cuda_version"] = match.group(1) if match else None
        facts["driver_version"] = rows[0]["driver_version"] if rows else None
    else:
        facts["gpus"] = []
    return facts


# --- the measurement -----------------------------------------------------------------------------

def props_of(server):
    try:
        status, props = server.call("/props")
    except OSError as exc:
        raise Refused(f"the server at {server.url} does not answer: {exc}") from None
    if status != 200 or not isinstance(props, dict):
        raise Refused(f"{server.url}/props answered {status}")
    return props


def slot_context(props):
    settings = props.get("default_generation_settings") or {}
    return settings.get("n_ctx") or (settings.get("params") or {}).get("n_ctx") or props.get("n_ctx")


def wait_loaded(server, wait_s):
    """/health 200; a server still loading its model (503) is waited for, up to ``wait_s``."""
    deadline, said = time.monotonic() + wait_s, False
    while True:
        try:
            status, _ = server.call("/health")
        except OSError as exc:
            raise Refused(f"{server.url}/health does not answer: {exc}") from None
        if status == 200:
            return
        if status != 503 or time.monotonic() >= deadline:
            raise Refused(f"{server.url}/health answered {status} "
                          f"({'still loading after ' + format(wait_s, 'g') + ' s' if status == 503 else 'not healthy'})")
        if not said:
            say(f"the server is loading its model (/health 503): waiting up to {wait_s:g} s")
            said = True
        time.sleep(1)


def wait_idle(server, wait_s):
    """Seconds waited for every slot to be idle (0: idle at once); Refused when still busy after ``wait_s``."""
    started = time.monotonic()
    busy = server.busy_slots()
    if not busy:
        return 0
    while busy and time.monotonic() < started + wait_s:
        time.sleep(0.5)
        busy = server.busy_slots()
    if busy:
        raise Refused(f"the server is busy with other requests ({busy} slot(s) processing for over {wait_s:g} s); "
                      "measure it when it is idle")
    return round(time.monotonic() - started, 3)


def one_request(server, prompt, tokens, timeout):
    body = {"prompt": prompt, "n_predict": tokens, "ignore_eos": True, "cache_prompt": False, "stream": False}
    started = time.monotonic()
    try:
        status, answer = server.call("/completion", body, timeout=timeout)
    except TimeoutError:
        raise Refused(f"/completion gave no answer in {timeout:g} s (a prompt of {len(prompt)} tokens, "
                      f"{tokens} to generate)") from None
    ended = time.monotonic()
    if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("timings"), dict):
        raise Refused(f"/completion answered {status}: {str(answer)[:300]}")
    return started, ended, answer["timings"]


def read_key(path):
    """A service's API key from its root-only file (its first line), or None without one."""
    if not path:
        return None
    with open(path) as handle:
        return handle.readline().rstrip("\n")


def measure(spec):
    key = read_key(spec["api_key_file"])
    server = Server(spec["url"], key)
    if spec["unit"]:
        shown = systemd_show(spec["unit"])
        if shown.get("ActiveState") != "active":
            raise Refused(f"{spec['unit']} is not running ({shown.get('ActiveState', 'unknown')}/"
                          f"{shown.get('SubState', 'unknown')}): deploy it, then bench it")
    wait_loaded(server, spec["load_wait_s"])
    props = props_of(server)
    n_ctx = slot_context(props)
    slots_seen = server.busy_slots() is not None
    wait_idle(server, spec["busy_wait_s"])

    depths, skipped = [], []
    for depth in spec["depths"]:
        if n_ctx and max(depth, 1) + spec["tokens"] + 1 > n_ctx:
            if not spec["fit_depths"]:
                skipped.append({"depth": depth, "why": f"{depth} + {spec['tokens']} tokens exceed the slot's "
                                                       f"context of {n_ctx}"})
        else:
            depths.append(depth)
    if not depths and spec["fit_depths"] and n_ctx and n_ctx > spec["tokens"] + 2:
        depths = [(n_ctx - spec["tokens"] - 1) // 2]  # a small context: half of what is left for the prompt
    if not depths:
        raise Refused(f"no depth fits the slot's context of {n_ctx} tokens with {spec['tokens']} generated")

    t0 = time.monotonic()
    say(f"tokenizing the text for depths {', '.join(map(str, depths))}")
    text = tokens_of(server, corpus_text(), max(depths) + STRIDE * (spec["repetitions"] + spec["warmup"]) + 64)
    tokenize_s = time.monotonic() - t0

    sampler = None
    if spec["gpus"]:
        sampler = Sampler(spec["gpus"], spec["sample_s"], t0)
        sampler.start()
    runs, contended = [], 0
    try:
        for w in range(spec["warmup"]):
            one_request(server, text[w * STRIDE:w * STRIDE + 64], 8, spec["timeout_s"])
        offset = spec["warmup"] * STRIDE
        for rep in range(spec["repetitions"]):
            for depth in depths:
                prompt = text[offset:offset + max(depth, 1)]
                offset = (offset + STRIDE) % max(1, len(text) - max(depths) - 1)
                waited = wait_idle(server, spec["busy_wait_s"]) if slots_seen else None
                started, ended, timings = one_request(server, prompt, spec["tokens"], spec["timeout_s"])
                busy_after = server.busy_slots() if slots_seen else None
                run = {"depth": depth, "rep": rep, "prompt_tokens": len(prompt),
                       "t_start": round(started - t0, 4), "t_end": round(ended - t0, 4),
                       "prompt_n": timings.get("prompt_n"), "prompt_ms": timings.get("prompt_ms"),
                       "cache_n": timings.get("cache_n"),
                       "predicted_n": timings.get("predicted_n"), "predicted_ms": timings.get("predicted_ms"),
                       # each fork's own rates (llama.cpp counts the decode steps after the first token)
                       "prompt_per_second": timings.get("prompt_per_second"),
                       "predicted_per_second": timings.get("predicted_per_second"),
                       "wall_ms": round((ended - started) * 1000, 3), "waited_idle_s": waited,
                       "contended": bool(busy_after) or bool(waited)}
                contended += run["contended"]
                runs.append(run)
                pp, tg = run["prompt_per_second"] or 0, run["predicted_per_second"] or 0
                say(f"depth {depth} repetition {rep + 1}/{spec['repetitions']}: prefill {pp:.1f} t/s, "
                    f"decode {tg:.1f} t/s ({run['wall_ms'] / 1000:.1f} s)")
    finally:
        power = sampler.stop() if sampler else None
    return {
        "ok": True,
        "spec": dict({k: spec[k] for k in ("repetitions", "tokens", "warmup", "sample_s", "gpus")}, depths=depths),
        "n_ctx_slot": n_ctx, "total_slots": props.get("total_slots"),
        "busy_check": "slots" if slots_seen else "not possible: the server's /slots endpoint is disabled",
        "contended_runs": contended,
        "skipped": skipped, "runs": runs, "power": power,
        "timing": {"tokenize_s": round(tokenize_s, 3), "bench_s": round(time.monotonic() - t0, 3)},
        "server": server_facts(spec, props),
        "rig": rig_facts(spec["gpus"]),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def parse(argv):
    parser = argparse.ArgumentParser(description="Measure a running llama-server (llamarig bench, rig side).")
    parser.add_argument("--spec-json", help="the whole measurement as a JSON object (keys below)")
    parser.add_argument("--url")
    parser.add_argument("--unit", help="the server's systemd unit (for its state and provenance)")
    parser.add_argument("--api-key-file")
    parser.add_argument("--gpus", help="nvidia-smi indices to sample, comma-separated (none: no power)")
    parser.add_argument("--depths", help="comma-separated prompt lengths in tokens")
    parser.add_argument("--repetitions", type=int)
    parser.add_argument("--tokens", type=int, help="generated tokens per request")
    parser.add_argument("--warmup", type=int)
    args = parser.parse_args(argv)
    spec = dict(DEFAULTS)
    if args.spec_json:
        spec.update(json.loads(args.spec_json))
    for key in ("url", "unit", "api_key_file", "repetitions", "tokens", "warmup"):
        if getattr(args, key) is not None:
            spec[key] = getattr(args, key)
    if args.gpus is not None:
        spec["gpus"] = [int(g) for g in args.gpus.split(",") if g.strip()]
    if args.depths is not None:
        spec["depths"] = [int(d) for d in args.depths.split(",") if d.strip()]
    return spec


def main(argv=None):
    spec = parse(sys.argv[1:] if argv is None else argv)
    try:
        result = measure(spec)
    except Refused as exc:
        result = {"ok": False, "error": str(exc)}
    except (OSError, ValueError) as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result, sort_keys=True))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
