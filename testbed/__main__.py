"""python -m testbed up|down|status|serve --workdir DIR [--rigs NAME:PORT:GPUS ...]

up:   ensure rootfs/sources, start FakeHub + git daemon in a detached process
      (URLs and pid in DIR/testbed.json), create and boot the rigs.
down: stop the rigs and the server process.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def _state_path(workdir: Path) -> Path:
    return workdir / "testbed.json"


def _write_state(workdir: Path, state: dict) -> None:
    tmp = workdir / ".testbed.json.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(_state_path(workdir))


def cmd_serve(args) -> int:
    """Long-lived owner of the hub, the git daemon and the rigs (it reaps nspawn)."""
    from .fakehub import FakeHub
    from .hubrepo import GEMMA_REPO
    from .rig import Rig, ensure_ssh_key, gpu_specs, stop_all
    from .sources import GitServer, ensure_llama_cpp_repo
    workdir = Path(args.workdir)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    hub = FakeHub(workdir / "hub")
    git = GitServer()
    repo, tag, commit = ensure_llama_cpp_repo()
    state = {"ready": False, "hub_url": hub.start(), "git_url": git.start(), "server_pid": os.getpid(),
             "llama_cpp": {"repo": "", "tag": tag, "commit": commit},
             "model_repo": GEMMA_REPO, "ssh_key": str(ensure_ssh_key()), "rigs": []}
    state["llama_cpp"]["repo"] = state["git_url"] + repo.name
    try:
        for spec in args.rigs or []:
            name, port, gpus = (spec.split(":") + [""])[:3]
            rig = Rig.create(name, int(port), gpu_specs(gpus, name), base_dir=workdir / "rigs")
            rig.boot()
            state["rigs"].append({"name": name, "ssh_port": int(port), "dir": str(rig.dir), "gpus": gpus,
                                  "boot_seconds": round(rig.timings["boot"], 1)})
        state["ready"] = True
    except Exception as e:
        state["error"] = f"{type(e).__name__}: {e}"
        stop.append(1)
    _write_state(workdir, state)
    while not stop:
        time.sleep(0.5)
    stop_all(workdir / "rigs")
    git.stop()
    hub.stop()
    return 0


def cmd_up(args) -> int:
    from .hubrepo import populate_hub
    from .rootfs import ensure_rootfs
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if _state_path(workdir).exists():
        cmd_down(args)
    ensure_rootfs()
    populate_hub(workdir / "hub")
    log = open(workdir / "server.log", "ab")
    cmd = [sys.executable, "-m", "testbed", "serve", "--workdir", str(workdir)]
    if args.rigs:
        cmd += ["--rigs", *args.rigs]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                     start_new_session=True, env=env)
    deadline = time.time() + 300
    while not _state_path(workdir).exists():
        if time.time() > deadline:
            raise SystemExit("server did not start; see server.log")
        time.sleep(0.2)
    state = json.loads(_state_path(workdir).read_text())
    print(json.dumps(state, indent=2))
    return 0 if state.get("ready") else 1


def cmd_down(args) -> int:
    from .rig import stop_all
    workdir = Path(args.workdir).resolve()
    sp = _state_path(workdir)
    state = json.loads(sp.read_text()) if sp.exists() else {}
    pid = state.get("server_pid")
    if pid:
        try:
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 90
            while time.time() < deadline and os.path.exists(f"/proc/{pid}"):
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
                if stat == "Z":
                    break
                time.sleep(0.2)
        except (ProcessLookupError, FileNotFoundError):
            pass
    stop_all(workdir / "rigs")  # anything left over (server killed hard)
    if sp.exists():
        sp.unlink()
    return 0


def cmd_status(args) -> int:
    sp = _state_path(Path(args.workdir))
    print(sp.read_text() if sp.exists() else "{}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed")
    p.add_argument("command", choices=["up", "down", "status", "serve"])
    p.add_argument("--workdir", required=True)
    p.add_argument("--rigs", nargs="*", help="NAME:SSH_PORT:GPUS, GPUS like 2x3090 or 3090,4090")
    args = p.parse_args(argv)
    return {"up": cmd_up, "down": cmd_down, "status": cmd_status, "serve": cmd_serve}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
