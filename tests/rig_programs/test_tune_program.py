"""rig_programs/llamarig-tune.py's candidate runner, through the local runner (as on the GPU bench machine),
against a stand-in llama-server program whose speed follows its flags: readiness, the failure words
(out of memory, failed to start, too slow to load), and the whole engine picking the candidate that
must win. (The systemd side, the guard and the restore: tests/e2e/test_tune.py on the container rigs.)"""

from __future__ import annotations

import os
import sys

import pytest

from llamarig.tune.candidates import Candidate
from llamarig.tune.engine import Engine, Settings
from llamarig.tune.prepare import Prepared
from llamarig.tune.rank import rank, winner
from llamarig.tune.runners import LocalRunner
from llamarig.tune.transient import PORT_WORD
from tests.rig_programs.helpers import ROOT, stand_in


@pytest.fixture
def server_bin(tmp_path):
    return str(stand_in(tmp_path / "bin", "llama-server",
                        f'#!/bin/sh\nexec {sys.executable} {ROOT / "tests/rig_programs/fake_llama_server.py"} "$@"\n'))


def cand(cid: str, *flags: str, axis: str | None = "threads") -> Prepared:
    return Prepared(Candidate(cid, cid if not flags else " ".join(flags), axis if cid != "c0" else None),
                    binary="/opt/llamarig/builds/KEY/bin/llama-server",
                    argv=["--ctx-size", "4096", *flags, "--host", "127.0.0.1", "--port", PORT_WORD],
                    properties=["Environment=CUDA_VISIBLE_DEVICES=0 FAKE_MARK=1"])


def runner(tmp_path, server_bin, **env) -> LocalRunner:
    for key, value in env.items():
        os.environ[key] = value
    r = LocalRunner(str(tmp_path / "logs"), [], binary=lambda b: server_bin, say=lambda t: None)
    r.load_timeout_s = 20
    return r


@pytest.fixture(autouse=True)
def clean_env():
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def test_a_candidate_starts_on_its_own_port_is_measured_and_stopped(tmp_path, server_bin):
    r = runner(tmp_path, server_bin)
    started = r.start(cand("c0", "--threads", "3"), 60)
    assert started["ok"], started
    assert started["url"].startswith("http://127.0.0.1:") and not started["url"].endswith(PORT_WORD)
    raw = r.bench(started, {"depths": [64], "repetitions": 2, "tokens": 4, "warmup": 0, "gpus": []})
    assert raw["ok"] and [run["predicted_per_second"] for run in raw["runs"]] == [80.0, 80.0]
    proc = started["server"].proc
    log = open(started["log"]).read()
    assert "--threads 3" in log and "--port " + started["url"].rsplit(":", 1)[1] in log
    r.stop(started)
    assert proc.poll() is not None


def test_the_failures_are_said_in_words_and_the_process_is_gone(tmp_path, server_bin):
    r = runner(tmp_path, server_bin, FAKE_OOM_UBATCH="4096", FAKE_REFUSE="--bogus")
    oom = r.start(cand("c1", "--ubatch-size", "4096"), 60)
    assert not oom["ok"] and oom["failure"]["kind"] == "out of memory"
    assert "cudaMalloc failed" in oom["failure"]["detail"]
    refused = r.start(cand("c2", "--bogus"), 60)
    assert not refused["ok"] and refused["failure"]["kind"] == "failed to start"
    assert "exit status 1" in refused["failure"]["detail"] and "--bogus" in refused["failure"]["log"]
    os.environ["FAKE_LOAD_S"] = "30"
    r.load_timeout_s = 1.5
    slow = r.start(cand("c3"), 60)
    assert not slow["ok"] and slow["failure"]["kind"] == "did not load in time"
    assert slow["server"].proc.poll() is not None


def test_the_engine_with_the_local_runner_finds_the_faster_threads_and_reports_the_oom(tmp_path, server_bin):
    r = runner(tmp_path, server_bin, FAKE_OOM_UBATCH="4096")
    ps = [cand("c0"), cand("c1", "--threads", "1"), cand("c2", "--threads", "4"),
          cand("c3", "--ubatch-size", "4096", axis="ubatch")]
    s = Settings(objective="decode", depth=64, repetitions=2, tokens=4, rounds=2, minutes=3, load_timeout_s=20)
    out = Engine(r, ps, s, say=lambda t: None).run()
    assert out.failures["c3"]["kind"] == "out of memory" and "c3" not in out.measured
    ranked = rank({p.candidate.id: p.candidate.label for p in ps}, out.measured, out.failures, out.not_run,
                  "decode", 64)
    best = winner(ranked)
    assert best is not None and best.id == "c2" and best.score.mean == pytest.approx(90.0)
    assert len(out.measured["c2"]) == 2  # a finalist: measured again in round 2


def test_a_candidate_that_hangs_once_loaded_is_reported_not_measured_and_the_tune_goes_on(tmp_path, server_bin,
                                                                                        monkeypatch):
    import llamarig.tune.engine as engine
    monkeypatch.setattr(engine, "REQUEST_FLOOR_S", 2.0)
    r = runner(tmp_path, server_bin, FAKE_HANG="--hang")
    ps = [cand("c0"), cand("c1", "--hang"), cand("c2", "--threads", "4")]
    s = Settings(objective="decode", depth=64, repetitions=2, tokens=4, rounds=2, minutes=3, load_timeout_s=20)
    out = Engine(r, ps, s, say=lambda t: None).run()
    assert out.failures["c1"]["kind"] == "not measured"
    assert "/completion gave no answer in 2 s" in out.failures["c1"]["detail"]
    assert "fake llama-server: --ctx-size 4096 --hang" in out.failures["c1"]["log"]   # what it said, kept
    ranked = rank({p.candidate.id: p.candidate.label for p in ps}, out.measured, out.failures, out.not_run,
                  "decode", 64)
    assert winner(ranked).id == "c2" and len(out.measured["c2"]) == 2
    assert [x for x in ranked if x.id == "c1"][0].status == "failed"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as handle:   # a zombie waiting for its reaper is gone too
        return handle.read().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_candidate_that_crashes_under_load_is_reported_crashed_and_what_it_forked_is_killed(
        tmp_path, server_bin, monkeypatch):
    import llamarig.tune.engine as engine
    monkeypatch.setattr(engine, "REQUEST_FLOOR_S", 2.0)
    pidfile = tmp_path / "child.pid"
    r = runner(tmp_path, server_bin, FAKE_CRASH="--crash", FAKE_CHILD_PIDFILE=str(pidfile))
    ps = [cand("c0"), cand("c1", "--crash"), cand("c2", "--threads", "4")]
    s = Settings(objective="decode", depth=64, repetitions=2, tokens=4, rounds=2, minutes=3, load_timeout_s=20)
    out = Engine(r, ps, s, say=lambda t: None).run()
    failure = out.failures["c1"]
    assert failure["kind"] == "crashed", failure
    assert failure["detail"].startswith("CUDA error: an illegal memory access was encountered (the measurement: ")
    child = int(pidfile.read_text())
    assert not alive(child)                       # the forked child ignored SIGINT and SIGTERM: killed with its group
    assert winner(rank({p.candidate.id: p.candidate.label for p in ps}, out.measured, out.failures, out.not_run,
                       "decode", 64)).id == "c2"  # and the tune went on


def test_a_candidate_dies_with_the_controller_that_started_it(tmp_path, server_bin):
    import signal
    import subprocess
    import time
    controller = (
        "import sys, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from llamarig.tune.runners import LocalRunner\n"
        "from tests.rig_programs.test_tune_program import cand\n"
        "r = LocalRunner(sys.argv[2], [], binary=lambda b: sys.argv[3], say=lambda t: None)\n"
        "started = r.start(cand('c0'), 600)\n"
        "print(started['server'].proc.pid, flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", controller, str(ROOT), str(tmp_path / "logs"), server_bin],
                            stdout=subprocess.PIPE, text=True, cwd=str(ROOT))
    try:
        server = int(proc.stdout.readline())
        assert alive(server)
        proc.send_signal(signal.SIGKILL)          # no chance to stop it: the kernel does (PR_SET_PDEATHSIG)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(server)
    finally:
        proc.kill()
