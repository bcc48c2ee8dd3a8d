"""ik_llama.cpp end to end: a rig builds ik_llama.cpp from its own git repository and serves under systemd."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .conftest import NO_AMX, ROOT, results
from .test_deploy import chat, failed_ops

pytestmark = pytest.mark.slow


def test_an_ik_llama_cpp_rig_serves_a_completion_and_is_measured(bed, tmp_path):
    from testbed.common import free_port
    from testbed.rig import Rig, gpu_specs
    from testbed.sources import ensure_ik_llama_cpp_repo

    _, tag, commit = ensure_ik_llama_cpp_repo()
    rig = Rig.create("rigik", free_port(), gpu_specs("3090", "rigik"), base_dir=bed.rigs["rig1"].dir.parent).boot()
    bed.rigs["rigik"] = rig
    port = free_port()
    key = rig.ssh_config()["key"]
    inventory = bed.project / "ikrigs.py"
    inventory.write_text(textwrap.dedent(f"""\
        ik = [("rigik", {{
            "ssh_hostname": "127.0.0.1", "ssh_port": {rig.ssh_port}, "ssh_user": "root", "ssh_key": {key!r},
            "ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "no",
            "gpus": [{{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}}],
            "build_fork": "ik_llama.cpp",
            "build_git_url": {bed.git_url + "ik_llama.cpp.git"!r},
            "build_ref": {tag!r},
            "build_jobs": 2,
            "build_targets": ["llama-server", "llama-sweep-bench"],
            # IQK flash-attention kernels for every quant type take most of a CPU build: not needed here.
            "build_cmake_options": ["-DGGML_IQK_FA_ALL_QUANTS=OFF", "-DCMAKE_C_FLAGS={NO_AMX}", "-DCMAKE_CXX_FLAGS={NO_AMX}"],
            "hub_endpoint": {bed.hub_url!r},
            "models": {{"gemma": {{"repo": "testbed/gemma-3-270m-GGUF", "include": ["Q4_K_M/*.gguf"]}}}},
            "services": [{{"name": "chat", "model": "gemma", "port": {port}, "ctx_size": 2048, "parallel": 1,
                           "threads": 2, "n_gpu_layers": 99, "mmap": False, "jinja": True,
                           "grouped_expert_routing": True}}],
            "verify_timeout_s": 300,
        }})]
    """))
    run = bed.pyinfra("-y", "--json", inventory=inventory, timeout=3000)
    assert run.returncode == 0, run.stderr[-4000:]
    assert failed_ops(run) == {}
    exec_start = bed.ssh("rigik", "grep ^ExecStart= /etc/systemd/system/llamarig-chat.service")
    binary = exec_start.split()[0].removeprefix("ExecStart=")
    # the unit names the build's own prefix; the stable link points there too
    assert binary.startswith(f"/opt/llamarig/builds/ik_llama.cpp-{commit[:12]}-") and binary.endswith("/bin/llama-server")
    assert bed.ssh("rigik", "readlink -f /opt/llamarig/ik_llama.cpp/bin/llama-server").strip() == binary
    assert "--no-mmap" in exec_start and "--grouped-expert-routing" in exec_start
    record = bed.ssh("rigik", "cat /opt/llamarig/ik_llama.cpp/.llamarig-build.json")
    assert commit in record
    assert bed.ssh("rigik", "test -x /opt/llamarig/ik_llama.cpp/bin/llama-sweep-bench && echo yes").strip() == "yes"
    assert "[live] healthy, n_ctx 2048" in run.stderr
    assert chat(port).strip()
    # A second run changes nothing.
    again = bed.pyinfra("-y", "--json", inventory=inventory)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [op["name"] for op in results(again)["results"]["operations"] if op["success"]] == []
    # ik_llama.cpp's server is measured the same way: its timings, token prompts, no prompt cache
    measured = subprocess.run([sys.executable, "-m", "llamarig", "bench", str(inventory), "--depths", "64",
                               "--repetitions", "2", "--tokens", "8", "--no-charts", "--results", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert measured.returncode == 0, measured.stdout[-2000:] + measured.stderr[-3000:]
    result = json.loads(next((tmp_path / "rigik" / "chat").glob("*.json")).read_text())
    assert result["release"]["fork"] == "ik_llama.cpp" and result["server"]["build"]["commit"] == commit
    assert [r["prompt_n"] for r in result["runs"]] == [64, 64] and result["summary"][0]["decode_tps"]["mean"] > 0
