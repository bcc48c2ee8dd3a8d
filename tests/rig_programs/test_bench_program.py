"""rig_programs/llamarig-bench.py, run as the rig runs it, against a fake llama-server on loopback, the
testbed's stand-in nvidia-smi and a stand-in systemctl: what it asks the server, what it samples, what it
refuses. (Against the real llama-server on the container rigs: tests/e2e/test_measure.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.rig_programs.fakeserver import FakeLlamaServer, llama_props
from tests.rig_programs.helpers import ROOT, env_with_path, program, stand_in

SCRIPT = program("llamarig-bench.py")
SYSTEMCTL = """#!/bin/sh
cat "$FAKE_RIG/show"
"""
NVIDIA_SMI = f"""#!/bin/sh
exec {sys.executable} {ROOT / 'testbed' / 'fake_nvidia_smi.py'} "$@"
"""


@pytest.fixture
def rig(tmp_path):
    bindir = tmp_path / "bin"
    stand_in(bindir, "systemctl", SYSTEMCTL)
    stand_in(bindir, "nvidia-smi", NVIDIA_SMI)
    (tmp_path / "gpus.json").write_text(json.dumps([{"power_draw_w": 120.0}, {"power_draw_w": 80.0},
                                                    {"power_draw_w": 999.0, "power_default_w": 450.0}]))
    (tmp_path / "show").write_text("ActiveState=active\nSubState=running\nMainPID=0\nFragmentPath=\n")
    return tmp_path, env_with_path(bindir, FAKE_RIG=str(tmp_path), FAKE_NVIDIA_GPUS=str(tmp_path / "gpus.json"),
                                   FAKE_NVIDIA_STATE=str(tmp_path / "state" / "state.json"))


def bench(env, url: str, timeout: float = 60, **spec) -> tuple[int, dict, list[str]]:
    spec = {"url": url, "depths": [16, 64], "repetitions": 2, "tokens": 4, "busy_wait_s": 1, "sample_s": 0.05,
            **spec}
    out = subprocess.run([sys.executable, str(SCRIPT), "--spec-json", json.dumps(spec)], env=env,
                         capture_output=True, text=True, timeout=timeout)
    lines = out.stdout.strip().splitlines()
    return out.returncode, json.loads(lines[-1]), lines[:-1]


def completions(server) -> list[dict]:
    return [s.body for s in server.seen if s.path == "/completion"]


def test_every_prompt_is_exactly_its_depth_of_real_text_never_cached_and_interleaved(rig):
    _, env = rig
    with FakeLlamaServer(slots=[{"id": 0, "is_processing": False}]) as server:
        status, result, progress = bench(env, server.url, warmup=1)
    assert status == 0 and result["ok"], result
    sent = completions(server)
    warmups, measured = sent[:1], sent[1:]
    assert [len(b["prompt"]) for b in measured] == [16, 64, 16, 64]  # every depth once, then again
    assert all(b["cache_prompt"] is False and b["ignore_eos"] is True and b["n_predict"] == 4 for b in measured)
    assert len({tuple(b["prompt"][:16]) for b in sent}) == len(sent)  # each starts elsewhere in the text
    assert warmups[0]["n_predict"] == 8
    tokenized = " ".join(s.body["content"] for s in server.seen if s.path == "/tokenize")
    assert "Python" in tokenized  # the text is Python's own documentation, not random tokens
    assert [r["depth"] for r in result["runs"]] == [16, 64, 16, 64]
    assert all(r["prompt_n"] == r["depth"] for r in result["runs"])
    assert result["busy_check"] == "slots" and result["contended_runs"] == 0
    assert len(progress) == 5 and progress[1].startswith("bench: depth 16 repetition 1/2: prefill 1000.0 t/s")


def test_only_the_services_gpus_are_sampled_with_limits_and_clocks(rig):
    _, env = rig
    with FakeLlamaServer() as server:
        status, result, _ = bench(env, server.url, gpus=[0, 1], depths=[2000], repetitions=1, tokens=20)
    assert status == 0, result
    power = result["power"]
    assert power["gpus"] == [0, 1] and power["fields"][0] == "power.draw"
    assert len(power["samples"]) >= 3
    assert {tuple(row[0] for row in s[1:]) for s in power["samples"]} == {(120.0, 80.0)}  # card 2's 999 W unseen
    assert all(s[1][1] == 350.0 and s[1][2] == 1695.0 for s in power["samples"])  # limit and SM clock
    assert [g["index"] for g in result["rig"]["gpus"]] == [0, 1]
    assert result["rig"]["driver_version"] == "550.127.05" and result["rig"]["cuda_version"] == "12.4"
    # no /slots (501): measured, and the result says the busy check was not possible
    assert result["busy_check"].startswith("not possible")


def test_a_busy_server_is_refused_and_an_idle_one_after_a_wait_is_measured(rig):
    _, env = rig
    with FakeLlamaServer(slots=[{"id": 0, "is_processing": True}]) as server:
        status, result, _ = bench(env, server.url)
        assert status == 1 and not result["ok"]
        assert result["error"].startswith("the server is busy with other requests (1 slot(s) processing for over 1 s)")
        assert not completions(server)

        def free():
            time.sleep(0.5)
            server.config.slots = [{"id": 0, "is_processing": False}]
        threading.Thread(target=free).start()
        status, result, _ = bench(env, server.url, busy_wait_s=5)
        assert status == 0 and result["ok"], result


def test_a_stopped_unit_or_a_loading_server_is_refused_in_words(rig):
    root, env = rig
    (root / "show").write_text("ActiveState=inactive\nSubState=dead\nMainPID=0\n")
    with FakeLlamaServer() as server:
        status, result, _ = bench(env, server.url, unit="llamarig-chat.service")
        assert status == 1
        assert result["error"] == ("llamarig-chat.service is not running (inactive/dead): deploy it, then bench it")
        (root / "show").write_text("ActiveState=active\nSubState=running\nMainPID=0\n")
        server.config.health = [503]
        status, result, _ = bench(env, server.url, unit="llamarig-chat.service", load_wait_s=1)
        assert status == 1 and "/health answered 503 (still loading after 1 s)" in result["error"]
        server.config.health = [503, 503, 200]  # loading, then ready: waited for and measured
        status, result, progress = bench(env, server.url, unit="llamarig-chat.service", load_wait_s=30)
        assert status == 0 and result["ok"], result
        assert progress[0] == "bench: the server is loading its model (/health 503): waiting up to 30 s"
    status, result, _ = bench(env, "http://127.0.0.1:9")
    assert status == 1 and "/health does not answer" in result["error"]


def test_depths_beyond_the_slots_context_are_skipped_or_fitted(rig):
    _, env = rig
    with FakeLlamaServer(props=llama_props(n_ctx=100)) as server:
        status, result, _ = bench(env, server.url, depths=[16, 64, 512])
        assert status == 0
        assert result["spec"]["depths"] == [16, 64]
        assert result["skipped"] == [{"depth": 512, "why": "512 + 4 tokens exceed the slot's context of 100"}]
        status, result, _ = bench(env, server.url, depths=[512, 4096], fit_depths=True)
        assert status == 0 and result["skipped"] == [] and result["spec"]["depths"] == [47]
        status, result, _ = bench(env, server.url, depths=[512])
        assert status == 1 and result["error"] == "no depth fits the slot's context of 100 tokens with 4 generated"


def test_secrets_in_the_servers_command_line_are_masked():
    import importlib.util
    spec = importlib.util.spec_from_file_location("llamarig_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    argv = ["/opt/llama-server", "--api-key", "sk-SECRET", "--hf-token=hf_SECRET", "-t", "4",
            "--api-key-file", "/run/credentials/x/api-key"]
    assert module.masked(argv) == ["/opt/llama-server", "--api-key", "***", "--hf-token=***", "-t", "4",
                                   "--api-key-file", "/run/credentials/x/api-key"]


def test_the_model_manifest_is_found_above_a_model_in_a_folder_of_its_revision(tmp_path):
    import importlib.util
    spec = importlib.util.spec_from_file_location("llamarig_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    revision = tmp_path / "models" / "gemma" / "0123456789ab"
    (revision / "Q4_K_M").mkdir(parents=True)
    (revision / ".manifest.json").write_text(json.dumps({"commit": "c" * 40, "files": {"Q4_K_M/a.gguf": {
        "sha256": "d" * 64, "size": 3}}, "identity": {"Q4_K_M/a.gguf": [1, 2]}}))
    found = module.model_manifest(str(revision / "Q4_K_M" / "a.gguf"), ".manifest.json")
    assert found == {"repo": None, "commit": "c" * 40, "files": {"Q4_K_M/a.gguf": {"sha256": "d" * 64, "size": 3}}}
    assert module.model_manifest(str(tmp_path / "elsewhere" / "b.gguf"), ".manifest.json") is None
