#!/usr/bin/env python3
"""Run llama-server configurations one at a time for ``llamarig tune``, and put the rig back (llamarig).

The controller (``llamarig/tune/``) decides what to run; this program runs it on the rig, Python's
standard library only. Each operation prints its answer as the last line of stdout, one JSON object:

  begin  SPEC   refuse a tune already running; restore one left over; record what to restore (the
                declared unit's state and file digest, the GPUs' power limits); stop the declared
                service; start the guard; then hold: while stdin stays open (the controller's SSH
                channel) it touches a heartbeat, and ends when stdin closes
  guard  STATE  (in its own transient unit, whose RuntimeMaxSec is the tune's deadline and whose
                ExecStopPost= is ``restore``) ends when the holder is gone or the state is removed
  start  SPEC   run one candidate in its own transient unit (systemd-run: the declared unit's
                settings and hardening, its own argv, Restart=no, RuntimeMaxSec= the deadline);
                wait for /health, or for its failure, said in words (out of memory, exited, too slow)
  stop   SPEC   stop a candidate's unit and forget it
  power  SPEC   set GPUs' power limits (the limits found at begin are what restore puts back)
  restore STATE stop every candidate, put the power limits back, start the declared service if it
                was running; idempotent, under a lock; removes the state
  end    SPEC   restore, then check the declared service: the same unit file, active, /health 200

The local runner (``llamarig.tune.runners.LocalRunner``, a machine without systemd) imports this file
and uses ``LocalServer`` in place of ``SystemdServer``: the same readiness wait and failure words.
"""

import ctypes
import fcntl
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

HEARTBEAT_STALE_S = 20
OOM = re.compile(r"out of memory|cudaMalloc failed|failed to allocate|unable to allocate|"
                 r"cannot allocate memory|failed to create context|ggml_backend_cuda_buffer_type_alloc_buffer",
                 re.IGNORECASE)


def answer(result):
    print(json.dumps(result, sort_keys=True), flush=True)
    return 0 if result.get("ok") else 1


def sh(args, timeout=120):
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError) as exc:
        return 127, "", f"{type(exc).__name__}: {exc}"
    return out.returncode, out.stdout, out.stderr


def _sibling(name):
    """The bench program beside this one (both are installed in the tune's folder, or both in rig_programs/)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    spec = importlib.util.spec_from_file_location(name.replace("-", "_")[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _sibling("llamarig-bench.py")
sha256 = BENCH.sha256


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- readiness and failure: shared by the systemd and the local runner ------------------------------

def health(url, key=None, timeout=5):
    request = urllib.request.Request(url.rstrip("/") + "/health")
    if key:
        request.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code
    except (OSError, ValueError):
        return None


def classify(log, status):
    """Why a server did not come up, in words: out of memory, or how it ended."""
    tail = "\n".join(log.strip().splitlines()[-25:])
    if OOM.search(log):
        line = next((l for l in reversed(log.splitlines()) if OOM.search(l)), "")
        return {"kind": "out of memory", "detail": line.strip()[-300:], "log": tail}
    return {"kind": "failed to start", "detail": f"exited ({status})", "log": tail}


def wait_ready(url, key, alive, log, timeout_s):
    """(ok, seconds, failure): /health 200 within ``timeout_s`` while ``alive()`` says the process runs."""
    started = time.monotonic()
    while True:
        state = alive()
        if state is not True:
            return False, time.monotonic() - started, classify(log(), state)
        if health(url, key) == 200:
            return True, time.monotonic() - started, None
        if time.monotonic() - started > timeout_s:
            failure = classify(log(), "still loading")
            if failure["kind"] != "out of memory":
                failure.update(kind="did not load in time", detail=f"no /health 200 in {timeout_s:g} s")
            return False, time.monotonic() - started, failure
        time.sleep(0.5)


def die_with_parent():
    """In the child, before exec: the kernel kills it when the tune that started it dies (Linux's
    PR_SET_PDEATHSIG), so that no candidate outlives a controller killed without a chance to stop it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalServer:
    """A candidate as a child process (a machine without systemd): its log in a file, killed at its deadline."""

    def __init__(self, spec):
        self.spec = spec
        self.log_path = spec["log"]
        self.proc = None
        self.timer = None

    def start(self):
        env = dict(os.environ)
        env.update(self.spec.get("env") or {})
        handle = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.spec["binary"], *self.spec["argv"]], stdout=handle,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                     preexec_fn=die_with_parent)
        handle.close()
        if self.spec.get("deadline_s"):
            self.timer = threading.Timer(self.spec["deadline_s"], self.stop)
            self.timer.daemon = True
            self.timer.start()

    def alive(self):
        code = self.proc.poll()
        return True if code is None else f"exit status {code}"

    def log(self):
        try:
            with open(self.log_path, "rb") as handle:
                return handle.read()[-200000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def pid(self):
        return self.proc.pid if self.proc else None

    def stop(self):
        if self.timer:
            self.timer.cancel()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # llama-server frees the GPU on SIGINT
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        # then the whole process group, whatever the server did: what it forked lives on otherwise (ggml's
        # abort forks gdb for a backtrace, which can hang attached, holding the dead server's GPU memory
        # through the device files it inherited)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass


class SystemdServer:
    """A candidate in its own transient unit (systemd-run), the declared unit's settings as properties."""

    def __init__(self, spec):
        self.spec = spec
        self.unit = spec["unit"]

    def start(self):
        args = ["systemd-run", "--unit", self.unit, "--description", self.spec["description"], "--no-ask-password"]
        args += [f"--property={p}" for p in self.spec["properties"]]
        args += [f"--property=RuntimeMaxSec={max(1, int(self.spec['deadline_s']))}", "--property=Restart=no",
                 "--", self.spec["binary"], *self.spec["argv"]]
        code, out, err = sh(args)
        if code != 0:
            raise RuntimeError(f"systemd-run refused the candidate: {(err or out).strip()[-400:]}")

    def show(self):
        _, out, _ = sh(["systemctl", "show", self.unit, "-p", "ActiveState,SubState,Result,ExecMainStatus,MainPID"])
        return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)

    def alive(self):
        shown = self.show()
        if shown.get("ActiveState") in ("active", "activating", "reloading"):
            return True
        return f"{shown.get('Result') or shown.get('ActiveState')}, exit status {shown.get('ExecMainStatus')}"

    def log(self):
        _, out, _ = sh(["journalctl", "-u", self.unit, "--no-pager", "-o", "cat", "-n", "400"])
        return out

    def pid(self):
        return int(self.show().get("MainPID") or 0) or None

    def stop(self):
        stop_unit(self.unit)


PORT_WORD = "@PORT@"


def with_port(spec):
    """The candidate's spec with a free loopback port where its argv says ``@PORT@``, and its URL."""
    port = free_port()
    argv = [w.replace(PORT_WORD, str(port)) for w in spec["argv"]]
    return dict(spec, argv=argv, url=f"http://127.0.0.1:{port}")


def run_candidate(server, url, key, timeout_s):
    """Start ``server`` and wait for it: {"ok", "url", "load_s", "failure"}; a failed one is stopped."""
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        return {"ok": False, "load_s": 0, "failure": {"kind": "failed to start", "detail": str(exc), "log": ""}}
    ok, seconds, failure = wait_ready(url, key, server.alive, server.log, timeout_s)
    if not ok:
        server.stop()
    return {"ok": ok, "url": url, "load_s": round(seconds, 3), "failure": failure, "pid": server.pid() if ok else None}


# --- the rig's state during a tune ---------------------------------------------------------------

def state_path(state_dir, service):
    return os.path.join(state_dir, f"{service}.json")


read_state = BENCH.read_json


def write_state(path, state):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(state, handle, sort_keys=True)
    os.replace(tmp, path)


def unit_show(unit, props="ActiveState,SubState,FragmentPath,UnitFileState"):
    _, out, _ = sh(["systemctl", "show", unit, "-p", props])
    return dict(l.split("=", 1) for l in out.splitlines() if "=" in l)


def stop_unit(unit, timeout=90):
    """Stop a unit and forget it (a failed transient unit stays loaded until reset-failed)."""
    sh(["systemctl", "stop", unit], timeout=timeout)
    sh(["systemctl", "reset-failed", unit])


def tune_units(prefix):
    """The loaded units of this service's tune: candidates and the guard."""
    _, out, _ = sh(["systemctl", "list-units", "--all", "--plain", "--no-legend", f"{prefix}-*"])
    return [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0].startswith(prefix)]


def power_limits(gpus):
    if not gpus:
        return {}
    code, out, _ = sh(["nvidia-smi", "--query-gpu=index,power.limit,power.min_limit,power.max_limit,"
                       "power.default_limit", "--format=csv,noheader,nounits", "-i", ",".join(map(str, gpus))])
    limits = {}
    for line in out.strip().splitlines() if code == 0 else []:
        cells = [c.strip() for c in line.split(",")]
        try:
            limits[cells[0]] = {"limit": float(cells[1]), "min": float(cells[2]), "max": float(cells[3]),
                                "default": float(cells[4])}
        except (ValueError, IndexError):
            continue
    return limits


def set_power(limits):
    """{gpu: watts}; each read back. Returns the problems."""
    problems = []
    for gpu, watts in sorted(limits.items()):
        code, out, err = sh(["nvidia-smi", "-i", str(gpu), "-pl", f"{float(watts):g}"])
        got = power_limits([gpu]).get(str(gpu), {}).get("limit")
        if code != 0 or got is None or abs(got - float(watts)) >= 0.5:
            problems.append(f"GPU {gpu}: power limit {float(watts):g} W not set ({(err or out).strip()[-200:]}, "
                            f"reads {got})")
    return problems


def restore(path, why):
    """Put the rig back as the state file says; idempotent; None when there was nothing to restore."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read_state(path)
        if state is None:
            return None
        stopped = []
        for unit in tune_units(state["prefix"]):
            if unit == state["guard_unit"]:
                continue
            stop_unit(unit)
            stopped.append(unit)
        originals = {g: v["limit"] for g, v in (state.get("power") or {}).items()}
        problems = set_power(originals) if originals and state.get("power_changed") else []
        started = None
        if state.get("was_active"):
            # a tune stops and starts the unit once: its start limit (StartLimitBurst=) is for crash loops, so
            # the counter is cleared first (tunes one after the other would hit it)
            sh(["systemctl", "reset-failed", state["declared_unit"]])
            code, out, err = sh(["systemctl", "start", state["declared_unit"]], timeout=300)
            started = code == 0 or (err or out).strip()[-300:]
        os.remove(path)
        return {"why": why, "stopped": stopped, "power_problems": problems, "power_restored": originals
                if state.get("power_changed") else {}, "declared_started": started, "since": state.get("started")}


def op_begin(spec):
    path = state_path(spec["state_dir"], spec["service"])
    os.makedirs(spec["state_dir"], mode=0o700, exist_ok=True)
    left = None
    state = read_state(path)
    if state is not None:
        guard = unit_show(state["guard_unit"], "ActiveState")
        holder = state.get("keeper_pid")
        if guard.get("ActiveState") == "active" and holder and alive_pid(holder) and \
                time.time() - heartbeat_time(state) < HEARTBEAT_STALE_S:
            return answer({"ok": False, "error": f"a tune of {spec['service']} is running on this rig (since "
                                                 f"{state.get('started')}); wait for it or stop it first"})
        sh(["systemctl", "stop", state["guard_unit"]], timeout=120)  # its ExecStopPost restores
        left = restore(path, "a tune left over was found by the next one") or {"why": "restored by its guard"}
    for unit in tune_units(spec["prefix"]):  # units of a tune whose state is gone
        stop_unit(unit)
    shown = unit_show(spec["declared_unit"])
    power = power_limits(spec["gpus"])
    state = {"service": spec["service"], "prefix": spec["prefix"], "guard_unit": spec["guard_unit"],
             "declared_unit": spec["declared_unit"], "was_active": shown.get("ActiveState") == "active",
             "unit_file": shown.get("FragmentPath"), "unit_sha256": sha256(shown.get("FragmentPath") or ""),
             "power": power, "power_changed": False, "keeper_pid": os.getpid(),
             "heartbeat": path + ".heartbeat", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "deadline_s": spec["deadline_s"]}
    write_state(path, state)
    touch(state["heartbeat"])
    me = os.path.abspath(spec["program"])
    code, out, err = sh(["systemd-run", "--unit", spec["guard_unit"], "--description",
                         f"llamarig tune guard of {spec['service']}: restores the rig if the tune ends unfinished",
                         f"--property=RuntimeMaxSec={int(spec['deadline_s'])}",
                         f"--property=ExecStopPost={sys.executable} {me} restore {path}",
                         "--", sys.executable, me, "guard", path])
    if code != 0:
        restore(path, "the guard could not start")
        return answer({"ok": False, "error": f"systemd-run could not start the guard: {(err or out).strip()[-300:]}"})
    if state["was_active"]:
        sh(["systemctl", "stop", spec["declared_unit"]], timeout=120)
    cores = physical_cores()
    answer({"ok": True, "state": path, "left_over": left, "was_active": state["was_active"],
            "unit_sha256": state["unit_sha256"], "power": power, "cpus": os.cpu_count(), "cores": cores})
    hold(state["heartbeat"])
    return 0


def physical_cores():
    try:
        with open("/proc/cpuinfo") as handle:
            text = handle.read()
    except OSError:
        return os.cpu_count()
    pairs = set(re.findall(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.S))
    return len(pairs) or os.cpu_count()


def touch(path):
    with open(path, "a"):
        os.utime(path)


def heartbeat_time(state):
    try:
        return os.stat(state["heartbeat"]).st_mtime
    except OSError:
        return 0


def alive_pid(pid):
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, ValueError):
        return False


def hold(heartbeat):
    """Touch the heartbeat while stdin is open; return when it closes (the controller is gone or done)."""
    closed = threading.Event()

    def reader():
        try:
            while sys.stdin.buffer.read(1):
                pass
        finally:
            closed.set()

    threading.Thread(target=reader, daemon=True).start()
    while not closed.wait(2):
        touch(heartbeat)


def op_guard(path):
    """Restore when the holder (begin) is gone; end when the state is removed (restored by someone)."""
    started = time.time()
    while True:
        state = read_state(path)
        if state is None:
            return 0
        stale = time.time() - heartbeat_time(state) > HEARTBEAT_STALE_S
        if (not alive_pid(state.get("keeper_pid")) or stale) and time.time() - started > 1:
            print(json.dumps(restore(path, "the controller went away mid-tune")), flush=True)
            return 0
        time.sleep(1)


def op_start(spec):
    spec = with_port(spec)
    server = SystemdServer(spec)
    key = BENCH.read_key(spec.get("api_key_file"))
    return answer(run_candidate(server, spec["url"], key, spec["load_timeout_s"]))


def op_stop(spec):
    SystemdServer(spec).stop()
    return answer({"ok": True})


def op_power(spec):
    path = state_path(spec["state_dir"], spec["service"])
    state = read_state(path)
    if state is None:
        return answer({"ok": False, "error": "no tune in progress: power limits are set only inside one"})
    state["power_changed"] = True
    write_state(path, state)
    problems = set_power({int(g): w for g, w in spec["limits"].items()})
    return answer({"ok": not problems, "error": "; ".join(problems), "limits": power_limits(list(spec["limits"]))})


def op_end(spec):
    path = state_path(spec["state_dir"], spec["service"])
    state = read_state(path) or {}
    done = restore(path, "the tune ended")
    stop_unit(spec["guard_unit"], timeout=60)
    deadline = time.monotonic() + spec.get("load_timeout_s", 300)
    key = BENCH.read_key(spec.get("api_key_file"))
    status = None
    if state.get("was_active", True):
        while time.monotonic() < deadline:
            status = health(spec["url"], key)
            if status == 200 or unit_show(spec["declared_unit"], "ActiveState").get("ActiveState") == "failed":
                break
            time.sleep(1)
    shown = unit_show(spec["declared_unit"])
    after = sha256(shown.get("FragmentPath") or "")
    left = tune_units(spec["prefix"])
    return answer({"ok": True, "restored": done, "active": shown.get("ActiveState"), "health": status,
                   "unit_sha256": after, "unit_sha256_before": state.get("unit_sha256"),
                   "was_active": state.get("was_active"), "left_units": left,
                   "state_left": os.path.exists(path), "power": power_limits(spec.get("gpus") or [])})


def main(argv):
    if len(argv) < 2:
        print("usage: llamarig-tune.py begin|start|stop|power|end SPEC_JSON | guard|restore STATE", file=sys.stderr)
        return 2
    op, arg = argv[0], argv[1]
    if op == "guard":
        return op_guard(arg)
    if op == "restore":
        print(json.dumps(restore(arg, "asked")), flush=True)
        return 0
    spec = json.loads(arg)
    ops = {"begin": op_begin, "start": op_start, "stop": op_stop, "power": op_power, "end": op_end}
    if op not in ops:
        print(f"llamarig-tune.py: unknown operation {op}", file=sys.stderr)
        return 2
    try:
        return ops[op](spec)
    except (OSError, ValueError, KeyError) as exc:
        return answer({"ok": False, "error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
