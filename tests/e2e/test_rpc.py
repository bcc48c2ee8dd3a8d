"""One model over two rigs: a worker rig runs llama.cpp's rpc-server under a hardened unit, lending its CPU;
the main rig's llama-server puts part of the model's layers on it through --rpc and serves a completion.
--dry --diff shows the flag first; a stopped worker fails the main rig's change and leaves its unit as it was."""

from __future__ import annotations

import re
import textwrap

import pytest

from .conftest import NO_AMX, results
from .test_deploy import chat, failed_ops

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pair(bed):
    from testbed.common import free_port
    from testbed.rig import Rig

    rigs = {}
    for name in ("rpcw", "rpcm"):
        rigs[name] = Rig.create(name, free_port(), [], base_dir=bed.rigs["rig1"].dir.parent).boot()
        bed.rigs[name] = rigs[name]
    ports = {"rpc": free_port(), "chat": free_port()}
    key = rigs["rpcw"].ssh_config()["key"]

    def ssh(r):
        return {"ssh_hostname": "127.0.0.1", "ssh_port": rigs[r].ssh_port, "ssh_user": "root", "ssh_key": key,
                "ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "no"}

    common = {
        "build_git_url": bed.git_url + "llama.cpp.git", "build_ref": "b0.3.36", "build_jobs": 2,
        "build_targets": ["llama-server"],
        "build_cmake_options": [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"],
        "hub_endpoint": bed.hub_url, "verify_timeout_s": 300, "verify_max_tokens": 12,
    }
    worker = {**ssh("rpcw"), **common, "gpus": [], "ram_gib": 8,
              "rpc_servers": [{"name": "lend", "host": "127.0.0.1", "port": ports["rpc"], "gpus": [], "threads": 1,
                               "cache": True, "cache_max_gib": 1}]}
    main = {**ssh("rpcm"), **common, "gpus": [], "ram_gib": 16,  # 8 GiB of it: llama-server's prompt cache
            "models": {"gemma": {"repo": "testbed/gemma-3-270m-GGUF", "include": ["Q4_K_M/*.gguf"]}},
            "services": [{"name": "chat", "model": "gemma", "port": ports["chat"], "ctx_size": 2048, "parallel": 1,
                          "threads": 2, "n_gpu_layers": 10, "fit": False, "rpc_workers": ["rpcw"],
                          "extra_args": ["--verbosity", "4"], "sampling": {"temp": 0.0}}]}
    inventory = bed.project / "rpcrigs.py"
    inventory.write_text(textwrap.dedent(f"""\
        # Test inventory written by tests/e2e/test_rpc.py: a worker lending its CPU, a main rig using it.
        workers = [("rpcw", {worker!r})]
        mains = [("rpcm", {main!r})]
    """))
    return inventory, ports


def test_dry_diff_shows_the_rpc_flag_before_anything_is_built(bed, pair):
    inventory, ports = pair
    run = bed.pyinfra("--dry", "--diff", inventory=inventory, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    out = run.stdout + run.stderr
    assert f"--rpc 127.0.0.1:{ports['rpc']}" in out
    assert f"--host 127.0.0.1 --port {ports['rpc']} --device CPU" in out   # the worker's rpc-server unit
    assert bed.ssh("rpcm", "ls /etc/systemd/system | grep -c llamarig- || true").strip() == "0"


def test_the_main_rig_serves_with_layers_on_the_worker(bed, pair):
    inventory, ports = pair
    run = bed.pyinfra("-y", "--json", inventory=inventory, timeout=3000)
    assert run.returncode == 0, run.stderr[-5000:]
    assert failed_ops(run) == {}
    # the worker's unit: hardened, bound to the declared address only, running the same build's rpc-server
    unit = bed.ssh("rpcw", "cat /etc/systemd/system/llamarig-rpc-lend.service")
    assert f"--host 127.0.0.1 --port {ports['rpc']} --device CPU --threads 1 --cache" in unit
    assert "ProtectSystem=strict" in unit and "0.0.0.0" not in unit
    assert bed.ssh("rpcw", "systemctl is-active llamarig-rpc-lend.service").strip() == "active"
    listening = bed.ssh("rpcw", "ss -ltnH").split("\n")
    assert any(f"127.0.0.1:{ports['rpc']}" in line for line in listening)
    # one build for both rigs: the same prefix, rpc-server in it
    prefix = lambda r: re.search(r"^ExecStart=(\S+)/bin/", bed.ssh(r, f"cat /etc/systemd/system/llamarig-{'rpc-lend' if r == 'rpcw' else 'chat'}.service"), re.M).group(1)  # noqa: E731
    assert prefix("rpcw") == prefix("rpcm")
    assert chat(ports["chat"]).strip()
    journal = bed.ssh("rpcm", "journalctl -u llamarig-chat.service --no-pager -o cat")
    on_rpc = re.findall(rf"RPC0\[127\.0\.0\.1:{ports['rpc']}\] model buffer size = +([\d.]+) MiB", journal)
    assert on_rpc and float(on_rpc[-1]) > 10, journal[-3000:]  # part of the model's layers on the worker
    assert re.search(r"CPU(_Mapped)? model buffer size = +([\d.]+) MiB", journal)  # and the rest on the main rig
    # the tensor cache is in the worker's cache directory
    assert bed.ssh("rpcw", "find /var/cache/llamarig/rpc-lend/rpc -type f | wc -l").strip() != "0"
    again = bed.pyinfra("-y", "--json", inventory=inventory)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [op["name"] for op in results(again)["results"]["operations"] if op["success"]] == []


def test_a_stopped_worker_fails_the_main_rigs_change_and_leaves_its_unit(bed, pair):
    inventory, ports = pair
    before = bed.ssh("rpcm", "cat /etc/systemd/system/llamarig-chat.service")
    bed.ssh("rpcw", "systemctl stop llamarig-rpc-lend.service")
    original = inventory.read_text()
    inventory.write_text(original.replace("'ctx_size': 2048", "'ctx_size': 1024"))
    try:
        run = bed.pyinfra("-y", "--limit", "rpcm", inventory=inventory, timeout=900)
        assert run.returncode != 0
        assert "its RPC worker(s) cannot be reached from this rig (rpcw/lend at 127.0.0.1:" in run.stderr
        assert "uses the RPC servers of rpcw, outside --limit" in run.stderr
        assert bed.ssh("rpcm", "cat /etc/systemd/system/llamarig-chat.service") == before
    finally:
        inventory.write_text(original)
    # the worker back: a deploy of both converges and the main rig serves again
    run = bed.pyinfra("-y", inventory=inventory, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    assert chat(ports["chat"]).strip()


def _completion(port: int, tokens: int = 32) -> dict:
    import json
    import urllib.request
    body = json.dumps({"prompt": "Count slowly from one to one hundred:", "n_predict": tokens, "ignore_eos": True,
                       "cache_prompt": False}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/completion", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())["timings"]


def _ready_after_restart(bed, port: int) -> float:
    import time
    import urllib.request
    t0 = time.monotonic()
    # reset-failed: the unit's start limit (3 in 15 minutes) counts these restarts too
    bed.ssh("rpcm", "systemctl reset-failed llamarig-chat.service; systemctl restart llamarig-chat.service")
    while time.monotonic() - t0 < 300:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("no /health within 300 s of the restart")


def test_load_with_and_without_the_tensor_cache_and_decode_through_rpc_against_local(bed, pair):
    """The figures the closing note gives (CPU rigs on one machine's loopback: the link is no network)."""
    import json
    inventory, ports = pair
    cold, warm = [], []
    for _ in range(3):
        bed.ssh("rpcw", "find /var/cache/llamarig/rpc-lend/rpc -type f -delete")
        cold.append(_ready_after_restart(bed, ports["chat"]))
        warm.append(_ready_after_restart(bed, ports["chat"]))
    through = [_completion(ports["chat"]) for _ in range(3)]
    # the same model and layers, all on the main rig's CPU: a llama-server of the same build beside the unit
    unit = bed.unit_text("rpcm")
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    words = exec_start.removeprefix("ExecStart=").split()
    binary, model = words[0], words[words.index("--model") + 1]
    from testbed.common import free_port
    local_port = free_port()   # the rigs share this machine's network: a port nobody holds
    bed.ssh("rpcm", f"nohup {binary} --model {model} --ctx-size 2048 --parallel 1 --threads 2 --n-gpu-layers 0 "
                    f"--host 127.0.0.1 --port {local_port} > /tmp/local-server.log 2>&1 & echo $! > /tmp/local.pid")
    try:
        import time
        import urllib.request
        deadline, ready = time.monotonic() + 300, False
        while not ready and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/health", timeout=2) as r:
                    ready = r.status == 200
            except OSError:
                time.sleep(0.2)
        assert ready, bed.ssh("rpcm", "tail -30 /tmp/local-server.log", check=False)
        local = [_completion(local_port) for _ in range(3)]
    finally:
        bed.ssh("rpcm", "kill $(cat /tmp/local.pid) 2>/dev/null || true", check=False)
    figures = {"load_s_cache_cold": cold, "load_s_cache_warm": warm,
               "decode_tps_rpc": [t["predicted_per_second"] for t in through],
               "decode_tps_local": [t["predicted_per_second"] for t in local],
               "prefill_tps_rpc": [t["prompt_per_second"] for t in through],
               "prefill_tps_local": [t["prompt_per_second"] for t in local]}
    (bed.project / "rpc-figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    assert all(x > 0 for x in figures["decode_tps_rpc"] + figures["decode_tps_local"])
    assert bed.ssh("rpcw", "find /var/cache/llamarig/rpc-lend/rpc -type f | wc -l").strip() != "0"
