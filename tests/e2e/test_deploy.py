"""The whole path on real systemd rigs: data in, llama-server answering under systemd out.

The tests run in file order and build on each other (one first deploy is
minutes of compiling; every later test reuses the deployed rigs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from .conftest import ROOT, results, write_garage

pytestmark = pytest.mark.slow


def chat(port: int, prompt: str = "Name a colour.") -> str:
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": 8, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        answer = json.loads(response.read())
    assert answer["usage"]["completion_tokens"] > 0
    return answer["choices"][0]["message"]["content"]


def changed_ops(run) -> dict[str, list[str]]:
    """Operation name -> hosts it changed, from pyinfra --json."""
    return {op["name"]: op["success"] for op in results(run)["results"]["operations"] if op["success"]}


def failed_ops(run) -> dict[str, list[str]]:
    return {op["name"]: op["error"] for op in results(run)["results"]["operations"] if op["error"]}


def resolve_requests(bed) -> list:
    return [r for r in bed.hub.requests if "/resolve/" in r.path and r.method == "GET"]


def test_first_deploy_serves_both_rigs(bed):
    started = time.monotonic()
    run = bed.pyinfra("-y", "--json", extra_env={"LLAMARIG_PROGRESS_S": "2"})  # a progress line every 2 s
    bed.first_deploy_s = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-4000:]
    assert failed_ops(run) == {}
    changed = changed_ops(run)
    assert any(name.startswith("Build | Build llama.cpp") for name in changed), changed
    for rig, unit in (("rig1", "chat"), ("rig1", "chat2"), ("rig2", "chat")):
        assert bed.ssh(rig, f"systemctl is-active llamarig-{unit}.service").strip() == "active"
    # Two services at once on rig1, each on its own GPUs and port, both answering.
    for port in (bed.ports["rig1"], bed.ports["rig1b"], bed.ports["rig2"]):
        assert chat(port).strip()
    # The verify step reported the live context it saw, as a live fact.
    for n_ctx in (4096, 1024, 2048):
        assert f"[live] healthy, n_ctx {n_ctx}" in run.stderr
    # Long steps said how far they were as they ran, each line with its rig's name (pyinfra's live output):
    # the build's steps and time, each file's bytes and rate, and the wait for /health.
    err = run.stderr
    assert re.search(r"\[rig\d\] llamarig-build: llama-server[^\n]*: step \d+ of \d+ \(\d+%\), \d+m\d\ds\n", err), err[-3000:]
    assert re.search(r"\[rig\d\] llamarig-build: llama-server[^\n]*(% done, \d+ objects compiled|step \d+ of \d+)"
                     r"[^\n]*built in \d+m\d\ds", err), err[-3000:]
    assert re.search(r"\[rig\d\] fetching Q4_K_M/\S+ \(\d+ bytes, [\d.]+ MiB\)", err), err[-3000:]
    assert re.search(r"\[rig\d\] fetched Q4_K_M/\S+: [\d.]+ MiB in \d+ s \([\d.]+ MB/s\)", err), err[-3000:]
    for rig in ("rig1", "rig2"):
        assert f"[{rig}] llamarig-chat.service: answers /health" in err, err[-3000:]
    # The closing report: every service of every rig, what it serves and that it answered, and each GPU's
    # power limit and the memory nvidia-smi showed it using; the same as JSON beside the inventory.
    assert "--> llamarig: what the rigs serve" in err, err[-3000:]
    saved = json.loads(bed.inventory.with_suffix(".report.json").read_text())
    by_rig = {r["rig"]: r for r in saved["rigs"]}
    assert sorted(by_rig) == ["rig1", "rig2"]
    served = {(r, s["name"]): s for r, rep in by_rig.items() for s in rep["services"]}
    assert sorted(served) == [("rig1", "chat"), ("rig1", "chat2"), ("rig2", "chat")]
    for (r, name), s in served.items():
        assert s["answered"].startswith("yes"), s
        assert s["url"] == f"http://127.0.0.1:{bed.ports[r if name == 'chat' else 'rig1b']}"
        assert s["fork"] == "llama.cpp" and len(s["fork_commit"]) == 40 and s["exposure"] is not None
    assert [g["power_limit_w"] for g in by_rig["rig1"]["gpus"]] == [300, 250, None]
    assert all(g["memory_used_mib"] is not None for g in by_rig["rig1"]["gpus"])
    # Power: limits per GPU (rig1, from group data) and per rig (rig2), set and kept by the stand-in nvidia-smi.
    q = "nvidia-smi --query-gpu=power.limit,persistence_mode --format=csv,noheader,nounits"
    assert bed.ssh("rig1", q).split("\n")[:3] == ["300.00, Enabled", "250.00, Enabled", "350.00, Enabled"]
    assert bed.ssh("rig2", q).strip() == "280.00, Enabled"
    # The unit carries the declared GPUs, and the regex reached llama-server intact through systemd's quoting.
    cmdline = bed.ssh("rig1", "tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value llamarig-chat)/cmdline")
    assert "blk\\.1[0-7]\\.ffn_(gate|up|down)=CPU" in cmdline.split("\n")
    for unit, devices in (("chat", "0,1"), ("chat2", "2")):
        environ = bed.ssh("rig1", f"tr '\\0' '\\n' < /proc/$(systemctl show -p MainPID --value llamarig-{unit})/environ")
        assert f"CUDA_VISIBLE_DEVICES={devices}" in environ.split("\n")
    # Both rigs share one ccache: the second build of the same commit and options hit it.
    stats = bed.ssh("rig1", "CCACHE_DIR=/var/cache/ccache ccache --print-stats")
    hits = dict(line.split("\t") for line in stats.splitlines() if "\t" in line)
    assert int(hits.get("direct_cache_hit", 0)) + int(hits.get("preprocessed_cache_hit", 0)) > 100, stats
    print(f"first deploy of two rigs: {bed.first_deploy_s:.0f} s")


def test_second_deploy_changes_nothing(bed):
    downloads_before = len(resolve_requests(bed))
    prefix_mtime = bed.ssh("rig1", "stat -c %Y /opt/llamarig/builds/*/bin/llama-server")
    pids = {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")}
    started = time.monotonic()
    run = bed.pyinfra("-y", "--json")
    took = time.monotonic() - started
    assert run.returncode == 0, run.stderr[-4000:]
    assert changed_ops(run) == {}
    assert failed_ops(run) == {}
    totals = results(run)["results"]["totals"]
    assert totals["no_change"] == totals["hosts"] > 20
    assert len(resolve_requests(bed)) == downloads_before  # nothing downloaded again
    assert bed.ssh("rig1", "stat -c %Y /opt/llamarig/builds/*/bin/llama-server") == prefix_mtime  # nothing rebuilt
    assert {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")} == pids  # nothing restarted
    # nothing changed: /health and /props only, no completion asked of any service
    assert run.stderr.count("answered before (answered a completion at") == 3, run.stderr[-3000:]
    assert run.stderr.count("answered: yes, answered a completion at") == 3, run.stderr[-3000:]  # the report
    print(f"no-change re-deploy of two rigs: {took:.0f} s")


def test_dry_diff_shows_a_flag_change_then_the_run_restarts_only_that_service(bed):
    unit_before = bed.unit_text("rig1")
    pids = {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")}
    other_pid = bed.main_pid("rig1", "chat2")
    write_garage(bed.project, bed.ports, temp=0.3)

    dry = bed.pyinfra("--dry", "--diff")
    assert dry.returncode == 0, dry.stderr[-4000:]
    out = dry.stdout + dry.stderr
    assert "--temp 0.7" in out and "--temp 0.3" in out, out[-3000:]
    assert "what this deploy would serve (--dry: planned, nothing live)" in dry.stderr, dry.stderr[-3000:]
    assert bed.unit_text("rig1") == unit_before  # --dry changed nothing
    assert {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")} == pids

    run = bed.pyinfra("-y", "--json")
    assert run.returncode == 0, run.stderr[-4000:]
    changed = changed_ops(run)
    assert changed.get("Services | Unit llamarig-chat.service") == ["rig1"], changed
    assert changed.get("Services | Restart llamarig-chat.service (unit, binary or model changed)") == ["rig1"]
    assert "--temp 0.3" in bed.unit_text("rig1")
    assert bed.main_pid("rig1") != pids["rig1"]
    assert bed.main_pid("rig2") == pids["rig2"]
    assert bed.main_pid("rig1", "chat2") == other_pid  # the other service of the same rig kept running
    assert chat(bed.ports["rig1"]).strip()


def test_a_flag_the_build_lacks_stops_that_change_and_keeps_the_service(bed):
    original = bed.inventory.read_text()
    unit_before, pid_before = bed.unit_text("rig2"), bed.main_pid("rig2")
    assert "'sampling': {'temp': 0.0}" in original
    bed.inventory.write_text(original.replace("'sampling': {'temp': 0.0}",
                                              "'sampling': {'temp': 0.0}, 'extra_args': ['--no-such-flag', '1']"))
    try:
        run = bed.pyinfra("-y", "--json")
        assert run.returncode != 0
        assert "llamarig-chat.service: this build's llama-server does not accept --no-such-flag" in run.stderr
        failed = failed_ops(run)
        assert failed["Services | Unit llamarig-chat.service"] == ["rig2"]
        assert all(hosts == ["rig2"] for hosts in failed.values())  # rig1 deployed as usual
        assert not any(name.startswith(("Build", "Models", "GPU power")) for name in failed)
        assert bed.unit_text("rig2") == unit_before and bed.main_pid("rig2") == pid_before
        assert chat(bed.ports["rig2"]).strip()
    finally:
        bed.inventory.write_text(original)
    run = bed.pyinfra("-y", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert changed_ops(run) == {}


def test_placement_auto_is_planned_shown_in_the_dry_diff_and_served(bed):
    """rig2's service says placement: auto: the planner reads the model's headers from the Hub and the
    planned flags reach the unit, visible in --dry --diff first."""
    original = bed.inventory.read_text()
    bed.inventory.write_text(original.replace("'sampling': {'temp': 0.0}",
                                              "'sampling': {'temp': 0.0}, 'placement': 'auto'"))
    try:
        unit_before = bed.unit_text("rig2")
        dry = bed.pyinfra("--dry", "--diff", "--limit", "rig2")
        assert dry.returncode == 0, dry.stderr[-4000:]
        out = dry.stdout + dry.stderr
        # gemma3 270M: 18 layers + the output layer, all on the one GPU; no override needed
        assert "rig2: chat: planned --n-gpu-layers 19 --fit off" in out, out[-3000:]
        assert any(line.lstrip().startswith("+") and "--n-gpu-layers 19" in line and "--fit off" in line
                   for line in out.splitlines()), out[-6000:]
        assert bed.unit_text("rig2") == unit_before
        run = bed.pyinfra("-y", "--json", "--limit", "rig2")
        assert run.returncode == 0, run.stderr[-4000:]
        assert "--n-gpu-layers 19" in bed.unit_text("rig2")
        assert chat(bed.ports["rig2"]).strip()
    finally:
        bed.inventory.write_text(original)
    run = bed.pyinfra("-y", "--json", "--limit", "rig2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert bed.unit_text("rig2") == unit_before


def test_a_rebooted_rig_comes_back_with_its_power_limits_and_services(bed):
    q = "nvidia-smi --query-gpu=power.limit,persistence_mode --format=csv,noheader,nounits"
    bed.rigs["rig1"].reboot()
    # No deploy in between: the boot unit re-applied what nvidia-smi forgot at reboot.
    assert bed.ssh("rig1", q).split("\n")[:3] == ["300.00, Enabled", "250.00, Enabled", "350.00, Enabled"]
    order = bed.ssh("rig1", "systemctl show -p After --value llamarig-chat.service")
    assert "llamarig-power.service" in order.split()
    deadline = time.monotonic() + 120
    for port in (bed.ports["rig1"], bed.ports["rig1b"]):
        while True:
            try:
                assert chat(port).strip()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)


def test_hub_token_reaches_the_rig_download_and_nowhere_else(bed):
    canary = "hf_CANARY0123456789abcdefTOKEN"
    model_file = "/var/lib/llamarig/models/gemma/*/Q4_K_M/gemma-3-270m-Q4_K_M-00003-of-00003.gguf"  # one revision
    bed.ssh("rig2", f"truncate -s 1000 {model_file}")  # a damaged file: the next deploy fetches it again
    bed.hub.clear_requests()
    run = bed.pyinfra("-y", "-vv", hf_token=canary)
    assert run.returncode == 0, run.stderr[-4000:]
    fetched = [r for r in bed.hub.requests if r.path.endswith("00003-of-00003.gguf") and r.method == "GET"]
    assert fetched and all(r.auth for r in fetched)  # the rig's download carried the token
    assert bed.ssh("rig2", f"stat -c %s {model_file}").strip() != "1000"
    assert bed.ssh("rig2", "stat -c '%a %U' /etc/llamarig/hub-token").strip() == "600 root"
    assert canary not in run.stdout + run.stderr  # not in pyinfra's output, even at -vv
    dry = bed.pyinfra("--dry", "--diff", hf_token=canary)
    assert dry.returncode == 0 and canary not in dry.stdout + dry.stderr
    plan = subprocess.run([sys.executable, "-m", "llamarig", "plan", str(bed.inventory), "--host", "rig2",
                           "--service", "chat"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "HF_TOKEN": canary})
    assert plan.returncode in (0, 2) and canary not in plan.stdout + plan.stderr
    repo = subprocess.run(["git", "grep", "-I", "-l", canary[:20]], cwd=ROOT, capture_output=True, text=True)
    assert repo.stdout.strip() in ("", "tests/e2e/test_deploy.py")  # only this test names it
    for rig in ("rig1", "rig2"):
        assert canary not in bed.ssh(rig, "cat /etc/systemd/system/llamarig-*.service")
        assert canary not in bed.ssh(rig, "journalctl --no-pager -o cat")
        assert canary not in bed.ssh(rig, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", check=False)
    # Without a token the file is removed again.
    run = bed.pyinfra("-y")
    assert run.returncode == 0, run.stderr[-4000:]
    assert bed.ssh("rig2", "test -e /etc/llamarig/hub-token && echo present || echo absent").strip() == "absent"


STATUS_PY = ("import sys, urllib.request as u, urllib.error as e\n"
             "h = {{'Content-Type': 'application/json'}}\n"
             "if len(sys.argv) > 1: h['Authorization'] = 'Bearer ' + open(sys.argv[1]).read().strip()\n"
             "r = u.Request('http://127.0.0.1:{port}/v1/chat/completions', headers=h, data=b'"
             '{{"messages": [{{"role": "user", "content": "Hi"}}], "max_tokens": 2}}' "')\n"
             "try: print(u.urlopen(r, timeout=120).status)\n"
             "except e.HTTPError as x: print(x.code)\n")


def test_api_key_reaches_the_server_as_a_credential_and_nowhere_else(bed, tmp_path):
    canary = "sk-llamarig-CANARY-5e1f0c9d"
    original = bed.inventory.read_text()
    bed.inventory.write_text(original.replace("'sampling': {'temp': 0.0}",
                                              "'sampling': {'temp': 0.0}, 'api_key_env': 'CHAT_API_KEY'"))
    env = {"CHAT_API_KEY": canary}
    script = STATUS_PY.format(port=bed.ports["rig2"])
    try:
        missing = bed.pyinfra("--dry", "--limit", "rig2")
        assert missing.returncode != 0 and "services[0].api_key_env = 'CHAT_API_KEY'" in missing.stderr
        assert "CHAT_API_KEY is not set on the controller" in missing.stderr
        dry = bed.pyinfra("--dry", "--diff", "--limit", "rig2", extra_env=env)
        assert dry.returncode == 0, dry.stderr[-3000:]
        run = bed.pyinfra("-y", "-vv", "--limit", "rig2", extra_env=env)
        assert run.returncode == 0, run.stderr[-4000:]
        (tmp_path / "s.py").write_text(script)
        bed.ssh("rig2", f"cat > /tmp/s.py <<'EOF'\n{script}\nEOF")
        assert bed.ssh("rig2", "python3 /tmp/s.py").strip() == "401"           # no key: refused
        key_file = "/etc/llamarig/credentials/chat.api-key"
        assert bed.ssh("rig2", f"python3 /tmp/s.py {key_file}").strip() == "200"  # the key: served
        assert bed.ssh("rig2", f"stat -c '%a %U' {key_file}").strip() == "600 root"
        plan = subprocess.run([sys.executable, "-m", "llamarig", "plan", str(bed.inventory), "--host", "rig2",
                               "--service", "chat"], capture_output=True, text=True, cwd=ROOT,
                              env={**os.environ, **env})
        render = subprocess.run([sys.executable, "-m", "llamarig", "render", str(bed.inventory), "--host", "rig2"],
                                capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env})
        assert render.returncode == 0 and "--api-key-file %d/api-key" in render.stdout
        outputs = dry.stdout + dry.stderr + run.stdout + run.stderr + plan.stdout + plan.stderr + render.stdout
        assert canary not in outputs                      # deploy, --diff, -vv, plan, render
        pid = bed.main_pid("rig2")
        assert canary not in bed.ssh("rig2", "cat /etc/systemd/system/llamarig-*.service")
        assert canary not in bed.ssh("rig2", f"tr '\\0' '\\n' < /proc/{pid}/environ")
        assert canary not in bed.ssh("rig2", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", check=False)
        assert canary not in bed.ssh("rig2", "journalctl --no-pager -o cat")
        repo = subprocess.run(["git", "grep", "-I", "-l", canary[:18]], cwd=ROOT, capture_output=True, text=True)
        assert repo.stdout.strip() in ("", "tests/e2e/test_deploy.py")  # only this test names it
    finally:
        bed.inventory.write_text(original)
    run = bed.pyinfra("-y", "--limit", "rig2")
    assert run.returncode == 0, run.stderr[-3000:]
    assert bed.ssh("rig2", "ls /etc/llamarig/credentials").strip() == ""
    assert bed.ssh("rig2", "python3 /tmp/s.py").strip() == "200"


BAD_DATA = [
    # (label, python source of the rig1 host data overrides, expected text in the error)
    ("gpu index the rig lacks", "{'services': [dict(SVC, gpus=[0, 5])]}", "rig1: services[0].gpus[1] = 5: expected a GPU index below 3"),
    ("two services on one port", "{'services': [dict(SVC, gpus=[0]), dict(SVC, name='two', gpus=[1])]}",
     "rig1: services[1].port = {port}: expected a port no other service of this rig uses"),
    ("tensor split length", "{'services': [dict(SVC, tensor_split=[1, 1, 1])]}",
     "rig1: services[0].tensor_split = [1, 1, 1]: expected 2 proportion(s), one per service GPU"),
    ("override regex does not compile", "{'services': [dict(SVC, tensor_overrides=[['blk\\\\.(1', 'CPU']])]}",
     "rig1: services[0].tensor_overrides[0][0] = 'blk\\\\.(1': expected a regular expression that compiles"),
    ("override names a device the service lacks", "{'services': [dict(SVC, tensor_overrides=[['exps', 'CUDA2']])]}",
     "rig1: services[0].tensor_overrides[0][1] = 'CUDA2': expected a device of this service: CPU, CUDA0, CUDA1"),
    ("undeclared model", "{'services': [dict(SVC, model='glm')]}",
     "rig1: services[0].model = 'glm': expected a model declared under `models`"),
    ("power limit not positive", "{'power_limit_w': 0}", "rig1: power_limit_w = 0: expected watts from 20 to 1500"),
    ("power limit not a number", "{'power_limits_w': {0: 'max'}}", "rig1: power_limits_w[0] = 'max': expected a number without quotes"),
    ("port out of range", "{'services': [dict(SVC, port=99999)]}", "rig1: services[0].port = 99999: expected a value of at most 65535"),
    ("misspelt key", "{'servcies': []}", "rig1: servcies = (an unknown key): expected a known key (see the README's data reference) (did you mean services?)"),
    ("unknown fork", "{'build_fork': 'vllm'}", "rig1: build_fork = 'vllm': expected one of llama.cpp, ik_llama.cpp"),
    ("ref the repository lacks", "{'build_ref': 'no-such-tag'}", "rig1: build_ref = 'no-such-tag': expected a ref of"),
    ("model the Hub lacks", "{'models': {'gemma': {'repo': 'testbed/nope-GGUF'}}}", "rig1: models.gemma = 'testbed/nope-GGUF': expected a model the Hub serves"),
]


@pytest.mark.parametrize("label,override,expected", BAD_DATA, ids=[b[0] for b in BAD_DATA])
def test_bad_data_is_refused_before_any_host_is_touched(bed, label, override, expected):
    unit_before = bed.unit_text("rig1")
    pid_before = bed.main_pid("rig1")
    # Same file name, so the same file-named group data applies; only rig1's host data differs.
    (bed.project / "bad").mkdir(exist_ok=True)
    if not (bed.project / "bad" / "group_data").exists():
        (bed.project / "bad" / "group_data").symlink_to(bed.project / "group_data")
    bad = bed.project / "bad" / "testrigs.py"
    bad.write_text(bed.inventory.read_text() + textwrap.dedent(f"""
        SVC = {{"name": "chat", "model": "gemma", "port": {bed.ports["rig1"]}, "gpus": [0, 1]}}
        garage = [(garage[0][0], {{**garage[0][1], **{override}}})]
        del SVC
    """))
    run = bed.pyinfra("-y", inventory=bad, timeout=300)
    assert run.returncode != 0
    err = run.stderr + run.stdout
    assert expected.format(port=bed.ports["rig1"]) in err, err[-3000:]
    assert "no host was changed" in err
    assert "rig2:" not in err  # only the rig with bad data is named
    assert "Traceback" not in err
    assert "Beginning operation run" not in err
    assert bed.unit_text("rig1") == unit_before
    assert bed.main_pid("rig1") == pid_before


def test_a_third_rig_from_group_data_alone_deploys_under_limit(bed):
    """rig3 is only a name in the inventory; group_data/shed.py says everything else. --limit leaves the others alone."""
    from testbed.common import free_port
    from testbed.rig import Rig, gpu_specs

    rig3 = Rig.create("rig3", free_port(), gpu_specs("3060", "rig3"), base_dir=bed.rigs["rig1"].dir.parent).boot()
    bed.rigs["rig3"] = rig3
    bed.ports["rig3"] = free_port()
    key = rig3.ssh_config()["key"]
    (bed.project / "group_data" / "shed.py").write_text(textwrap.dedent(f"""\
        ssh_hostname = "127.0.0.1"
        ssh_port = {rig3.ssh_port}
        ssh_user = "root"
        ssh_key = {key!r}
        ssh_known_hosts_file = "/dev/null"
        ssh_strict_host_key_checking = "no"
        gpus = [{{"model": "NVIDIA GeForce RTX 3060", "memory_gib": 12}}]
        power_limit_w = 150
        services = [{{"name": "chat", "model": "gemma", "port": {bed.ports["rig3"]}, "ctx_size": 1024, "threads": 1}}]
    """))
    bed.inventory.write_text(bed.inventory.read_text() + 'shed = ["rig3"]\n')
    pids = {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")}

    run = bed.pyinfra("-y", "--json", "--limit", "shed")
    assert run.returncode == 0, run.stderr[-4000:]
    hosts = {h for op in results(run)["results"]["operations"] for h in op["success"] + op["no_change"] + op["error"]}
    assert hosts == {"rig3"}
    assert chat(bed.ports["rig3"]).strip()
    assert bed.ssh("rig3", "nvidia-smi --query-gpu=power.limit --format=csv,noheader,nounits").strip() == "150.00"
    assert {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")} == pids
