"""``llamarig bench`` against the deployed container rigs: a measured service is left as it ran, a stopped
one is refused, and a slower service is called a regression.

The stand-in ``nvidia-smi`` reports the power draw this file declares for each card, so the
energy figures can be checked against their formula: tokens / (watts * seconds / 3.6e6), with
only the service's own cards counted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT
from .test_deploy import chat

pytestmark = pytest.mark.slow

CANARY = "sk-bench-canary-71c2e0"
DRAW_W = [150.0, 90.0, 40.0]  # rig1's three cards; its chat service runs on cards 0 and 1


@pytest.fixture(scope="module", autouse=True)
def deployed(bed):
    """The rigs as the earlier e2e files leave them (a first deploy when this file runs alone)."""
    run = bed.pyinfra("-y")
    assert run.returncode == 0, run.stderr[-4000:]


def bench(bed, results: Path, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    run = subprocess.run([sys.executable, "-m", "llamarig", "bench", str(bed.inventory), "--results", str(results),
                          *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


def set_draw(bed, rig: str, watts: list[float]) -> None:
    gpus = json.loads(bed.ssh(rig, "cat /etc/llamarig-testbed/gpus.json"))
    for gpu, w in zip(gpus, watts):
        gpu["power_draw_w"] = w
    bed.ssh(rig, f"cat > /etc/llamarig-testbed/gpus.json <<'EOF'\n{json.dumps(gpus)}\nEOF")


def only_result(directory: Path) -> dict:
    files = sorted(directory.glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_bench_measures_a_deployed_service_as_it_runs_and_leaves_it_running(bed, tmp_path):
    set_draw(bed, "rig1", DRAW_W)
    pid, unit = bed.main_pid("rig1"), bed.unit_text("rig1")

    run = bench(bed, tmp_path, "--limit", "rig1", "--service", "chat", "--depths", "64,256",
                "--repetitions", "3", "--tokens", "8")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    print(run.stdout)
    directory = tmp_path / "rig1" / "chat"
    result = only_result(directory)
    stem = next(directory.glob("*.json")).stem
    for suffix in (".txt", "-speed.png", "-energy.png"):
        assert (directory / (stem + suffix)).is_file(), suffix
    for png in directory.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    table = (directory / (stem + ".txt")).read_text()
    assert "Context  Prefill (t/s)" in table and table in run.stdout

    # the service as it was: same process, same unit, still answering
    assert bed.main_pid("rig1") == pid and bed.unit_text("rig1") == unit
    assert chat(bed.ports["rig1"]).strip()

    # what was measured: every prompt really prefilled, plausible speeds, three repetitions per depth
    runs = result["runs"]
    assert sorted({r["depth"] for r in runs}) == [64, 256] and len(runs) == 6
    assert all(r["prompt_n"] == r["depth"] == r["prompt_tokens"] and r["cache_n"] in (0, None) for r in runs)
    assert all(r["predicted_n"] == 8 for r in runs)
    rows = {r["depth"]: r for r in result["summary"]}
    for row in rows.values():
        assert row["runs"] == 3 and row["not_prefilled"] == 0
        assert 1 < row["prefill_tps"]["mean"] < 100000 and 0.5 < row["decode_tps"]["mean"] < 10000
        assert row["prefill_tps"]["sd"] is not None and row["ttft_ms"]["mean"] > 0
    # only the service's cards are counted: 150 + 90 W, not card 2's 40 W
    assert rows[256]["decode_w"]["mean"] == pytest.approx(240.0)
    assert rows[256]["prefill_w"]["mean"] == pytest.approx(240.0)
    for depth, row in rows.items():
        # llama.cpp's own decode rate counts the steps after the first token: (n - 1) / time
        per_run = [(r["predicted_n"] - 1) / (r["predicted_ms"] / 1000) * 3.6e6 / 240.0 for r in runs
                   if r["depth"] == depth]
        assert row["decode_tokens_per_kwh"]["mean"] == pytest.approx(sum(per_run) / len(per_run), rel=1e-6)
        prefill = [r["prompt_n"] / (r["prompt_ms"] / 1000) * 3.6e6 / 240.0 for r in runs if r["depth"] == depth]
        assert row["prefill_tokens_per_kwh"]["mean"] == pytest.approx(sum(prefill) / len(prefill), rel=1e-6)
    power = result["power"]
    assert power["gpus"] == [0, 1] and len(power["samples"]) >= 5
    assert result["power_limits_w"] == {"0": [300.0], "1": [250.0]}  # garage's declared limits, as set

    # provenance: the rig's own records of what runs, and the release beside them
    server, release, facts = result["server"], result["release"], result["rig_facts"]
    assert server["pid"] == pid and server["unit"] == "llamarig-chat.service"
    assert len(server["build"]["commit"]) == 40 and server["build"]["url"].endswith("llama.cpp.git")
    if release["exact"]:  # under rigs.lock the release is what was installed; a preview assumes (nvcc, refs)
        assert server["build"]["commit"] == release["commit"]
        assert server["build"]["cmake_args"] == release["cmake_args"]
    else:
        assert release["preview"]
    assert result["runs_release_flags"] is True and "--ctx-size" in server["argv"]
    assert release["model"]["repo"] == "testbed/gemma-3-270m-GGUF"
    assert server["model"]["commit"] == release["model"]["commit"]
    assert sorted(server["model"]["files"]) == [f[0] for f in release["model"]["files"]]
    assert all(server["model"]["files"][f[0]]["sha256"] == f[2] for f in release["model"]["files"])
    assert [g["name"] for g in facts["gpus"]] == ["NVIDIA GeForce RTX 3090"] * 2
    assert facts["driver_version"] == "550.127.05" and facts["cuda_version"] == "12.4"
    assert facts["cpu"]["threads"] >= 1 and facts["ram_bytes"] > 0
    assert result["timing"]["bench_s"] > 0 and result["compared"] is None


def test_bench_refuses_a_stopped_service_and_writes_nothing(bed, tmp_path):
    bed.ssh("rig2", "systemctl stop llamarig-chat")
    try:
        run = bench(bed, tmp_path, "--limit", "rig2", "--depths", "64", "--repetitions", "1")
        assert run.returncode == 1
        assert "rig2 chat: not measured: llamarig-chat.service is not running (inactive" in run.stderr, run.stderr
        assert not list(tmp_path.rglob("*.json"))
    finally:
        bed.ssh("rig2", "systemctl start llamarig-chat")


def test_compare_calls_a_slower_service_a_regression_and_names_what_changed(bed, tmp_path):
    """One thread (two contend on a busy 2-core machine), then the same with one-token ubatches: a prefill
    that processes the prompt token by token is several times slower whatever else the machine does."""
    args = ("--limit", "rig2", "--depths", "128", "--repetitions", "4", "--tokens", "16", "--no-charts")
    original = bed.inventory.read_text()
    rig1, rig2 = original.split("attic = ")
    assert "'threads': 2" in rig2
    one_thread = rig2.replace("'threads': 2", "'threads': 1", 1)
    try:
        bed.inventory.write_text(rig1 + "attic = " + one_thread)
        deploy = bed.pyinfra("-y", "--limit", "rig2")
        assert deploy.returncode == 0, deploy.stderr[-4000:]
        first = bench(bed, tmp_path, *args)
        assert first.returncode == 0, first.stderr[-3000:]
        # token-by-token prefill, and an API key: the bench reads it on the rig, the controller needs none
        slower = one_thread.replace("'threads': 1", "'threads': 1, 'ubatch_size': 1", 1).replace(
            "'sampling': {'temp': 0.0}", "'sampling': {'temp': 0.0}, 'api_key_env': 'CHAT_API_KEY'", 1)
        bed.inventory.write_text(rig1 + "attic = " + slower)
        deploy = bed.pyinfra("-y", "--limit", "rig2", extra_env={"CHAT_API_KEY": CANARY})
        assert deploy.returncode == 0, deploy.stderr[-4000:]
        second = bench(bed, tmp_path, *args, "--compare")
        print(first.stdout, second.stdout, second.stderr)
        assert second.returncode == 1, second.stdout[-3000:] + second.stderr[-3000:]
        kept = "".join(p.read_text() for p in (tmp_path / "rig2" / "chat").iterdir())
        assert CANARY not in second.stdout + second.stderr + kept
        assert "REGRESSION rig2 chat depth 128 prefill_tps" in second.stderr
        results = sorted((tmp_path / "rig2" / "chat").glob("*.json"))
        assert len(results) == 2
        newest = json.loads(results[-1].read_text())
        assert newest["compared"]["with"] == results[0].name
        verdicts = {c["figure"]: c["verdict"] for c in newest["compared"]["changes"]}
        assert verdicts["prefill_tps"] == "regression", verdicts
        flags = [p for p in newest["compared"]["provenance_changes"] if p.startswith("server flags: ")]
        assert flags and "added --ubatch-size 1" in flags[0] and "added --api-key-file" in flags[0], newest["compared"]
        assert "compared with" in second.stdout and "regression" in second.stdout
    finally:
        bed.inventory.write_text(original)
        back = bed.pyinfra("-y", "--limit", "rig2")
        assert back.returncode == 0, back.stderr[-4000:]
