"""Two real container rigs, a loopback Hub and a git server, and a project that describes them.

rig1 (two stand-in RTX 3090s) is in group ``garage``, whose group data holds its
service; rig2 (one 3090) states its service in host data. Both build the same
llama.cpp commit (one shared ccache: the second build finds every object
cached) and serve the split gemma-3 270M from the fake Hub.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = [sys.executable, "-m", "pyinfra"]

# This machine's CPU reports AMX and llama.cpp's AMX kernels crash on it (SIGSEGV in
# ggml_backend_amx_mul_mat): build without them, as a rig with such a CPU would.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


@dataclass
class Bed:
    project: Path
    hub: object
    hub_url: str
    git_url: str
    rigs: dict
    ports: dict
    runs: list = field(default_factory=list)

    @property
    def inventory(self) -> Path:
        return self.project / "testrigs.py"

    def pyinfra(self, *args, inventory: Path | None = None, timeout: int = 1800,
                hf_token: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        cmd = [*PYINFRA, str(inventory or self.inventory), "deploy.py", *args]
        env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
        if hf_token:
            env["HF_TOKEN"] = hf_token
        env["PYINFRA_PROGRESS"] = "off"
        env.update(extra_env or {})
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
        self.runs.append((cmd, result))
        return result

    def ssh(self, rig: str, command: str, check: bool = True) -> str:
        return self.rigs[rig].ssh(command, check=check).stdout

    def main_pid(self, rig: str, service: str = "chat") -> int:
        return int(self.ssh(rig, f"systemctl show -p MainPID --value llamarig-{service}.service").strip())

    def unit_text(self, rig: str, service: str = "chat") -> str:
        return self.ssh(rig, f"cat /etc/systemd/system/llamarig-{service}.service")


def need_root():
    if os.geteuid() != 0 or not shutil.which("systemd-nspawn"):
        pytest.fail("the end-to-end tests need root and systemd-nspawn (bash scripts/setup.sh installs it)")


def write_project(project: Path, hub_url: str, git_url: str, rigs: dict, ports: dict, temp: float = 0.7) -> None:
    (project / "group_data").mkdir(parents=True, exist_ok=True)
    key = rigs["rig1"].ssh_config()
    ssh = lambda r: {  # noqa: E731
        "ssh_hostname": "127.0.0.1", "ssh_port": rigs[r].ssh_port, "ssh_user": "root",
        "ssh_key": key["key"], "ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "no",
    }
    rig2 = dict(ssh("rig2"))
    rig2.update({
        "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}],
        "power_limit_w": 280,
        "services": [{"name": "chat", "model": "gemma", "port": ports["rig2"], "ctx_size": 2048,
                      "threads": 2, "parallel": 1, "sampling": {"temp": 0.0}}],
    })
    (project / "testrigs.py").write_text(textwrap.dedent(f"""\
        # Test inventory written by tests/e2e/conftest.py.
        garage = [("rig1", {ssh("rig1")!r})]
        attic = [("rig2", {rig2!r})]
    """))
    (project / "group_data" / "testrigs.py").write_text(textwrap.dedent(f"""\
        build_git_url = {git_url + "llama.cpp.git"!r}
        build_ref = "b0.3.36"
        build_jobs = 2
        build_targets = ["llama-server", "llama-gguf-split"]
        build_cmake_options = ["-DCMAKE_C_FLAGS={NO_AMX}", "-DCMAKE_CXX_FLAGS={NO_AMX}"]
        hub_endpoint = {hub_url!r}
        models = {{"gemma": {{"repo": "testbed/gemma-3-270m-GGUF", "include": ["Q4_K_M/*.gguf"]}}}}
        verify_timeout_s = 300
        verify_max_tokens = 12
    """))
    write_garage(project, ports, temp)


def write_garage(project: Path, ports: dict, temp: float) -> None:
    (project / "group_data" / "garage.py").write_text(textwrap.dedent(f"""\
        gpus = [{{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}}] * 3
        power_limits_w = {{0: 300, 1: 250}}
        services = [{{
            "name": "chat", "model": "gemma", "port": {ports["rig1"]}, "ctx_size": 4096,
            "gpus": [0, 1], "tensor_split": [3, 1], "threads": 2, "parallel": 1,
            "tensor_overrides": [["blk\\\\.1[0-7]\\\\.ffn_(gate|up|down)", "CPU"]],
            "sampling": {{"temp": {temp}}},
        }}, {{
            "name": "chat2", "model": "gemma", "port": {ports["rig1b"]}, "ctx_size": 1024,
            "gpus": [2], "threads": 1, "parallel": 1,
        }}]
    """))


@pytest.fixture(scope="session")
def bed(tmp_path_factory):
    need_root()
    from testbed.common import free_port
    from testbed.fakehub import FakeHub
    from testbed.hubrepo import populate_hub
    from testbed.rig import Rig, gpu_specs, stop_all
    from testbed.sources import GitServer, ensure_llama_cpp_repo

    work = tmp_path_factory.mktemp("bed")
    ensure_llama_cpp_repo()
    populate_hub(work / "hub")
    hub = FakeHub(work / "hub")
    hub_url = hub.start()
    git = GitServer()
    git_url = git.start()
    rigs_dir = work / "rigs"
    rigs = {}
    try:
        rigs["rig1"] = Rig.create("rig1", free_port(), gpu_specs("3x3090", "rig1"), base_dir=rigs_dir).boot()
        rigs["rig2"] = Rig.create("rig2", free_port(), gpu_specs("3090", "rig2"), base_dir=rigs_dir).boot()
        # Count this session's ccache hits only (the cache outlives test runs).
        rigs["rig1"].ssh("CCACHE_DIR=/var/cache/ccache ccache --zero-stats >/dev/null")
        ports = {"rig1": free_port(), "rig1b": free_port(), "rig2": free_port()}
        project = work / "project"
        write_project(project, hub_url, git_url, rigs, ports)
        yield Bed(project=project, hub=hub, hub_url=hub_url, git_url=git_url, rigs=rigs, ports=ports)
    finally:
        stop_all(rigs_dir)
        hub.stop()
        git.stop()


def results(run: subprocess.CompletedProcess) -> dict:
    """pyinfra --json results: {host: [(operation name, changed, success), ...]}."""
    try:
        return json.loads(run.stdout)
    except ValueError:
        raise AssertionError(f"pyinfra printed no JSON results (exit {run.returncode}):\n{run.stderr[-6000:]}") from None
