"""``llamarig tune`` on the container rigs: candidates in transient units, the rig left as declared.

rig2's chat service (one stand-in RTX 3090 at 280 W, gemma on the CPU, threads 2) is tuned over
threads, ubatch and power limits: each candidate runs in its own transient unit, the stand-in
``nvidia-smi`` keeps the power limits a candidate sets, and at the end the declared unit must serve
again, its file unchanged, the limit back at 280 W, no unit or state left behind, the results
written. A controller killed mid-tune must leave a rig that restores itself; a candidate that cannot
start is reported and the tune goes on.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import NO_AMX, ROOT
from .test_deploy import chat

pytestmark = pytest.mark.slow

RIG, UNIT = "rig2", "llamarig-chat.service"
LIMIT_W = 280.0


@pytest.fixture(scope="module", autouse=True)
def deployed(bed):
    run = bed.pyinfra("-y", "--limit", RIG)
    assert run.returncode == 0, run.stderr[-4000:]


def tune_args(bed, results: Path, *args) -> list[str]:
    return [sys.executable, "-m", "llamarig", "tune", str(bed.inventory), "--host", RIG, "--service", "chat",
            "--results", str(results), *args]


def tune(bed, results: Path, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    run = subprocess.run(tune_args(bed, results, *args), cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


def power_limit(bed) -> float:
    return float(bed.ssh(RIG, "nvidia-smi -i 0 --query-gpu=power.limit --format=csv,noheader,nounits").strip())


def leftovers(bed) -> str:
    units = bed.ssh(RIG, "systemctl list-units --all --plain --no-legend 'llamarig-tune-*'").strip()
    state = bed.ssh(RIG, "ls /run/llamarig/tune/*.json 2>/dev/null || true").strip()
    return (units + "\n" + state).strip()


def as_declared(bed, unit_text: str) -> None:
    assert bed.ssh(RIG, f"systemctl is-active {UNIT}").strip() == "active"
    assert bed.unit_text(RIG) == unit_text
    assert chat(bed.ports[RIG]).strip()
    assert power_limit(bed) == LIMIT_W
    assert leftovers(bed) == ""


def only_result(directory: Path) -> dict:
    files = sorted(directory.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_a_tune_over_threads_ubatch_and_power_leaves_the_declared_unit_serving(bed, tmp_path):
    unit_text = bed.unit_text(RIG)
    assert power_limit(bed) == LIMIT_W
    run = tune(bed, tmp_path, "--axes", "threads,ubatch", "--power", "--depth", "128", "--tokens", "8",
               "--repetitions", "2", "--rounds", "2", "--minutes", "6", "--load-timeout", "240")
    print(run.stdout, run.stderr[-4000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    as_declared(bed, unit_text)

    result = only_result(tmp_path / RIG / "chat" / "tune")
    assert result["restore_problems"] == [] and result["restore"]["health"] == 200
    assert result["restore"]["unit_sha256"] == result["restore"]["unit_sha256_before"]
    labels = {c["candidate"]["id"]: c["candidate"]["label"] for c in result["candidates"]}
    assert "threads 1" in labels.values() and "ubatch_size 1024" in labels.values()
    assert any(label.startswith("power GPU 0 ") for label in labels.values())
    measured = result["measurements"]
    assert "c0" in measured and len(measured) >= 4, sorted(measured)
    for cid, raws in measured.items():
        for raw in raws:
            # each candidate ran in its own transient unit, with its own arguments, on loopback
            server = raw["server"]
            assert server["unit"] == f"llamarig-tune-chat-{cid}.service"
            assert server["unit_file"].startswith("/run/systemd/transient/"), server["unit_file"]
            assert "--host" in server["argv"] and server["argv"][server["argv"].index("--host") + 1] == "127.0.0.1"
            assert len(raw["runs"]) == 2 and all(r["prompt_n"] == 128 for r in raw["runs"])
    # a power candidate ran at its own limit (the stand-in reports what nvidia-smi -pl set)
    power_ids = [cid for cid, label in labels.items() if label.startswith("power ") and cid in measured]
    assert power_ids
    for cid in power_ids:
        want = next(c["candidate"]["power"]["0"] for c in result["candidates"] if c["candidate"]["id"] == cid)
        seen = {g["power.limit"] for raw in measured[cid] for g in raw["rig"]["gpus"]}
        assert seen == {want}, (cid, seen, want)
    # threads 2 is the declared value; the declared ubatch (512) is not a candidate
    assert "ubatch_size 512" not in labels.values() and "threads 2" not in labels.values()
    ranking = result["ranking"]
    assert ranking[0]["status"] == "measured" and {r["verdict"] for r in ranking if r["id"] == "c0"} == {"baseline"}
    table = next((tmp_path / RIG / "chat" / "tune").glob("*.txt")).read_text()
    assert table in run.stdout and "the rig is back as declared" in table


def test_killing_the_controller_mid_tune_leaves_a_rig_that_restores_itself(bed, tmp_path):
    unit_text = bed.unit_text(RIG)
    proc = subprocess.Popen(tune_args(bed, tmp_path, "--axes", "threads", "--power", "--depth", "128",
                                      "--tokens", "8", "--repetitions", "2", "--minutes", "6"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        deadline = time.monotonic() + 600
        for line in proc.stderr:
            seen.append(line)
            # a power candidate is running: the declared service is stopped and the limit changed
            if "round 1: power GPU 0" in line and "starting" in line:
                break
            assert time.monotonic() < deadline, "".join(seen)
        time.sleep(3)
        assert bed.ssh(RIG, f"systemctl is-active {UNIT}", check=False).strip() != "active", "".join(seen)
        assert bed.ssh(RIG, "systemctl is-active llamarig-tune-chat-guard.service").strip() == "active"
        # a deploy meanwhile is refused before it touches the rig (it would start the service under the tune)
        refused = bed.pyinfra("-y", "--limit", RIG)
        assert refused.returncode != 0 and "no `llamarig tune` running on the rig" in refused.stderr, \
            refused.stderr[-3000:]
        assert bed.ssh(RIG, f"systemctl is-active {UNIT}", check=False).strip() != "active"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the guard sees the holder gone (its SSH channel closed) and puts the rig back by itself
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if leftovers(bed) == "" and bed.ssh(RIG, f"systemctl is-active {UNIT}", check=False).strip() == "active":
            break
        time.sleep(2)
    time.sleep(5)
    as_declared(bed, unit_text)
    journal = bed.ssh(RIG, "journalctl -u llamarig-tune-chat-guard.service --no-pager -o cat")
    assert "the controller went away mid-tune" in journal, journal[-2000:]
    # and a deploy finds nothing to put back
    run = bed.pyinfra("-y", "--limit", RIG)
    assert run.returncode == 0, run.stderr[-4000:]
    as_declared(bed, unit_text)


def test_a_candidate_that_fails_to_start_is_reported_and_the_tune_goes_on(bed, tmp_path):
    unit_text = bed.unit_text(RIG)
    run = tune(bed, tmp_path, "--axes", "threads", "--try", 'extra_args=["--no-such-flag"]',
               "--try", "ubatch_size=256", "--depth", "128", "--tokens", "8", "--repetitions", "2",
               "--rounds", "1", "--minutes", "5")
    print(run.stdout, run.stderr[-3000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = only_result(tmp_path / RIG / "chat" / "tune")
    bad = next(c["candidate"]["id"] for c in result["candidates"] if "--no-such-flag" in c["candidate"]["label"])
    assert result["failures"][bad]["kind"] == "failed to start", result["failures"]
    assert "no-such-flag" in result["failures"][bad]["log"]
    assert bad not in result["measurements"]
    # the candidates after it were measured, and the failure is in the table
    assert {"c0", "t2"} <= set(result["measurements"]), sorted(result["measurements"])
    assert "failed to start" in run.stdout
    as_declared(bed, unit_text)


def test_another_fork_is_built_in_its_own_prefix_and_tried_while_the_serving_build_is_left(bed, tmp_path):
    """rig2 (llama.cpp) with ik_llama.cpp in tune_forks: built on the rig by the deploy's build program (the ik
    test's options and targets, so the shared ccache has its objects), tried, and the serving build, its link
    and the unit left as they were."""
    from testbed.sources import ensure_ik_llama_cpp_repo

    _, tag, commit = ensure_ik_llama_cpp_repo()
    unit_text = bed.unit_text(RIG)
    names: dict = {}
    exec((bed.project / "testrigs.py").read_text(), names)
    rig2 = dict(names["attic"][0][1])
    (bed.project / "tunerigs.py").write_text(f"attic = [('rig2', {rig2!r})]\n")
    ik = {"build_fork": "ik_llama.cpp", "build_git_url": bed.git_url + "ik_llama.cpp.git", "build_ref": tag,
          "build_cmake_options": ["-DGGML_IQK_FA_ALL_QUANTS=OFF", f"-DCMAKE_C_FLAGS={NO_AMX}",
                                  f"-DCMAKE_CXX_FLAGS={NO_AMX}"],
          "build_targets": ["llama-server", "llama-sweep-bench"]}
    group = (bed.project / "group_data" / "testrigs.py").read_text() + f"tune_forks = [{ik!r}]\n"
    (bed.project / "group_data" / "tunerigs.py").write_text(group)
    link = bed.ssh(RIG, "readlink -f /opt/llamarig/llama.cpp").strip()
    run = subprocess.run([sys.executable, "-m", "llamarig", "tune", str(bed.project / "tunerigs.py"), "--host", RIG,
                          "--service", "chat", "--results", str(tmp_path), "--axes", "fork_options", "--depth", "128",
                          "--tokens", "8", "--repetitions", "2", "--rounds", "1", "--minutes", "6",
                          "--load-timeout", "300"], cwd=ROOT, capture_output=True, text=True, timeout=3600)
    print(run.stdout, run.stderr[-4000:])
    assert "Traceback" not in run.stderr
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = only_result(tmp_path / RIG / "chat" / "tune")
    other = next(c for c in result["candidates"] if c["candidate"]["id"] == "b1c0")
    assert other["binary"].startswith(f"/opt/llamarig/builds/ik_llama.cpp-{commit[:12]}-"), other["binary"]
    assert "b1c0" in result["measurements"], result["failures"]
    served = result["measurements"]["b1c0"][0]["server"]
    assert served["binary"] == other["binary"] and served["build"]["commit"] == commit
    assert {c["candidate"]["label"] for c in result["candidates"]} >= {"ik_llama.cpp: declared",
                                                                       "ik_llama.cpp: run_time_repack true"}
    # the serving build and its link are as they were; the ik prefix is complete and stays for a later deploy
    assert bed.ssh(RIG, "readlink -f /opt/llamarig/llama.cpp").strip() == link
    prefix = other["binary"].rsplit("/bin/", 1)[0]
    assert commit in bed.ssh(RIG, f"cat {prefix}/.llamarig-build.json")
    as_declared(bed, unit_text)
