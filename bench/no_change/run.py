#!/usr/bin/env python3
"""How long a deploy that changes nothing takes: two container rigs (the demo's data, each serving gemma
on its own port), one first deploy, then REPEAT no-change deploys, timed.

    .venv/bin/python bench/no_change/run.py [--repeat 10] [--out bench/results/no-change]

Each run's wall time, and llamarig's own time: the controller's CPU time (user + system of the pyinfra
process, which is pyinfra, llamarig's data flow and SSH), the part a faster machine would shrink. The rest
of the wall time is waiting on the rigs: SSH round trips and the commands (facts, the check) they run.
Also counted: how many SSH commands a run sends (pyinfra -vv prints each). Needs root (containers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = ROOT / ".venv/bin/python"


def pyinfra(workdir: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    env = dict(os.environ, LLAMARIG_DEMO_DIR=str(workdir), PYINFRA_PROGRESS="off")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run([str(PY), "-m", "pyinfra", "-y", *args, "inventory/demo.py", "deploy.py"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return done, wall, cpu


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--workdir", default="/var/lib/llamarig-bench-nochange")
    ap.add_argument("--out", default=str(ROOT / "bench/results/no-change"))
    ap.add_argument("--keep", action="store_true", help="leave the rigs running")
    a = ap.parse_args()
    workdir = Path(a.workdir)
    state = workdir / "testbed.json"
    if not (state.exists() and json.loads(state.read_text()).get("ready")):
        up = subprocess.run([str(PY), "-m", "testbed", "up", "--workdir", str(workdir),
                             "--rigs", "nc1:2241:2x3090", "nc2:2242:2x3090"], cwd=ROOT, capture_output=True, text=True)
        if up.returncode:
            sys.exit(f"testbed up failed: {up.stderr[-2000:]}")
    first, first_wall, _ = pyinfra(workdir)
    if first.returncode:
        print(first.stderr[-4000:], file=sys.stderr)
        return 1
    runs = []
    for i in range(a.repeat):
        done, wall, cpu = pyinfra(workdir, "-vv") if i == 0 else pyinfra(workdir)
        if done.returncode:
            print(done.stderr[-4000:], file=sys.stderr)
            return 1
        if i == 0:
            commands = sum(1 for line in done.stderr.splitlines() if ">>>" in line)
        runs.append({"wall_s": round(wall, 3), "controller_cpu_s": round(cpu, 3),
                     "completions": done.stderr.count("answers: "),
                     "answered_before": done.stderr.count("answered before (")})
    walls = [r["wall_s"] for r in runs[1:]] or [runs[0]["wall_s"]]
    cpus = [r["controller_cpu_s"] for r in runs[1:]] or [runs[0]["controller_cpu_s"]]
    result = {"rigs": 2, "services": 2, "first_deploy_s": round(first_wall, 1), "ssh_commands_per_run": commands,
              "nproc": os.cpu_count(), "load_1m_after": os.getloadavg()[0],
              "wall_s": {"mean": round(statistics.mean(walls), 2), "sd": round(statistics.pstdev(walls), 2),
                         "min": min(walls), "max": max(walls)},
              "controller_cpu_s": {"mean": round(statistics.mean(cpus), 2), "sd": round(statistics.pstdev(cpus), 2),
                                   "min": min(cpus), "max": max(cpus)},
              "runs": runs, "note": "run 1 is -vv (counts SSH commands) and is left out of the means"}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=1))
    if not a.keep:
        subprocess.run([str(PY), "-m", "testbed", "down", "--workdir", str(workdir)], cwd=ROOT, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
