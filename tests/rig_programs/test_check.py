"""rig_programs/llamarig-check.py, the one live checker (the deploy's and ``llamarig verify``'s), run as the
rig runs it against a fake llama-server on loopback, with stand-in systemctl, journalctl and systemd-analyze."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.rig_programs.fakeserver import MODEL_PATH, FakeLlamaServer, completion, ik_props, llama_props
from tests.rig_programs.helpers import Rig, program

SCRIPT = program("llamarig-check.py")
UNIT = "llamarig-chat.service"
CANARY = "CANARY-d41d8cd98f00b204e9800998ecf8427e"

@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path / "rig")


@pytest.fixture
def server():
    with FakeLlamaServer() as s:
        yield s


def expectation(url: str, **overrides) -> dict:
    doc = {"unit": UNIT, "url": url, "api_key_file": None, "timeout_s": 30,
           "prompt": "Reply with one short friendly sentence.", "max_tokens": 24, "props": {}}
    doc.update(overrides)
    return doc


def run(rig: Rig, expect: dict, *flags: str, inline=False, timeout=60) -> tuple[dict, subprocess.CompletedProcess]:
    args = ["--expect-json", json.dumps(expect), *flags]
    cmd = [sys.executable, "-c", SCRIPT.read_text(), *args] if inline else [sys.executable, str(SCRIPT), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=rig.env, timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout  # ONE line of JSON, always
    return json.loads(lines[0]), r


def by_name(verdict: dict) -> dict:
    return {c["check"]: c for c in verdict["checks"]}


ALL_PROPS = {"n_ctx": 4096, "model_path": MODEL_PATH, "alias": "gemma", "total_slots": 1,
             "sampling": {"temp": 0.6, "top_p": 0.95}}


# --- all good, and the output's shape --------------------------------------------------------

def test_all_good(rig, server):
    verdict, r = run(rig, expectation(server.url, props=ALL_PROPS), "--wait", "--inference", "--exposure", "--journal")
    assert verdict["ok"] is True and "error" not in verdict and "journal" not in verdict, verdict
    assert [c["check"] for c in verdict["checks"]] == [
        "unit", "health", "n_ctx", "model_path", "alias", "slots", "sampling.temp", "sampling.top_p",
        "completion", "exposure"]
    assert all(c["ok"] is True for c in verdict["checks"])
    assert all(set(c) == {"check", "grade", "ok", "value", "expected", "detail"} for c in verdict["checks"])
    assert all(c["detail"] for c in verdict["checks"])
    grades = {c["check"]: c["grade"] for c in verdict["checks"]}
    assert grades["completion"] == grades["exposure"] == "measured"
    assert {grades[k] for k in grades if k not in ("completion", "exposure")} == {"live"}
    checks = by_name(verdict)
    assert checks["unit"]["value"] == "active"
    assert checks["health"]["value"] == 200
    assert checks["n_ctx"]["value"] == 4096 and checks["n_ctx"]["expected"] == 4096
    assert checks["model_path"]["value"] == MODEL_PATH
    assert checks["sampling.temp"]["value"] == 0.6 and checks["sampling.top_p"]["expected"] == 0.95
    value = checks["completion"]["value"]
    assert value["completion_tokens"] == 5 and value["tokens_per_s"] == 42.5
    assert value["answer"] == "Hello there, friend!" and value["latency_s"] >= 0
    assert checks["exposure"]["value"] == 4.2
    assert verdict["unit"] == UNIT and verdict["live_n_ctx"] == 4096 and verdict["live_slots"] == 1
    assert verdict["answer"] == "Hello there, friend!" and verdict["completion_tokens"] == 5

    # What was asked of systemd and of the server.
    assert f"show -p ActiveState -p SubState --value {UNIT}" in rig.log()
    assert rig.log("systemd-analyze") == [f"security --no-pager {UNIT}"]
    assert rig.log("journalctl") == []
    post = [s for s in server.seen if s.method == "POST"]
    assert [s.path for s in post] == ["/v1/chat/completions"]
    assert post[0].body == {"messages": [{"role": "user", "content": "Reply with one short friendly sentence."}],
                            "max_tokens": 24, "temperature": 0}
    assert all(s.authorization is None for s in server.seen)  # no key declared: no header


def test_waits_while_the_model_loads(rig):
    with FakeLlamaServer(health=[503, 503, 200]) as server:
        verdict, _ = run(rig, expectation(server.url), "--wait")
        assert verdict["ok"] is True, verdict
        assert server.paths("GET").count("/health") == 3


def test_tokens_per_second_from_the_latency_when_the_server_gives_no_timings(rig):
    with FakeLlamaServer(completion=completion(tokens=8, per_second=None)) as server:
        verdict, _ = run(rig, expectation(server.url), "--inference")
    value = by_name(verdict)["completion"]["value"]
    assert verdict["ok"] and value["tokens_per_s"] == pytest.approx(8 / value["latency_s"], rel=0.02)


def test_inline_source_and_an_expectation_file(rig, server, tmp_path):
    verdict, _ = run(rig, expectation(server.url, props=ALL_PROPS), "--wait", "--inference", inline=True)
    assert verdict["ok"] is True and len(verdict["checks"]) == 9, verdict

    path = tmp_path / "expect.json"
    path.write_text(json.dumps(expectation(server.url, props={"n_ctx": 2048})))
    r = subprocess.run([sys.executable, "-c", SCRIPT.read_text(), "--expect", str(path)],
                       capture_output=True, text=True, env=rig.env, timeout=60)
    verdict = json.loads(r.stdout)
    assert r.returncode == 0 and verdict["ok"] is False and by_name(verdict)["n_ctx"]["expected"] == 2048


# --- /props ----------------------------------------------------------------------------------

@pytest.mark.parametrize("props, ok", [
    (llama_props(n_ctx=8192, slots=2), True),  # unified KV cache: every slot sees the whole context
    (llama_props(n_ctx=4096, slots=2), True),  # split KV cache: one slot's share
    (llama_props(n_ctx=2048, slots=2), False),  # silently shrunk at start-up
    ({"n_ctx": 4096, "total_slots": 2}, True),  # top-level n_ctx, no default_generation_settings.n_ctx
    ({"n_ctx": 1024, "total_slots": 2}, False),
])
def test_n_ctx(rig, props, ok):
    with FakeLlamaServer(props=props) as server:
        verdict, _ = run(rig, expectation(server.url, props={"n_ctx": 8192, "total_slots": 2}))
    check = by_name(verdict)["n_ctx"]
    assert check["ok"] is ok and verdict["ok"] is ok, verdict
    assert check["expected"] == 8192 and verdict["live_slots"] == 2
    if not ok:
        assert "declared ctx_size 8192" in check["detail"] and str(check["value"]) in check["detail"]
        assert verdict["error"] == check["detail"]


@pytest.mark.parametrize("want, match, ok", [
    (MODEL_PATH, None, True),
    ("/var/lib/llamarig/models/gemma/ba9876543210/gemma-Q4_K_M.gguf", None, False),
    ("/var/lib/llamarig/models/gemma/*/gemma-Q4_K_M.gguf", None, False),  # exact unless told otherwise
    ("/var/lib/llamarig/models/gemma/*/gemma-Q4_K_M.gguf", "fnmatch", True),
    ("/var/lib/llamarig/models/other/*/*", "fnmatch", False),
])
def test_model_path(rig, server, want, match, ok):
    props = {"model_path": want, **({"model_path_match": match} if match else {})}
    verdict, _ = run(rig, expectation(server.url, props=props))
    check = by_name(verdict)["model_path"]
    assert check["ok"] is ok and verdict["ok"] is ok and check["value"] == MODEL_PATH and check["expected"] == want


def test_alias_slots_and_sampling_mismatches_without_wait_are_all_reported(rig):
    props = llama_props(alias="gemma", slots=4, temperature=0.8, top_p=0.95)
    with FakeLlamaServer(props=props) as server:
        verdict, _ = run(rig, expectation(server.url, props=ALL_PROPS), "--inference")
        assert "/v1/chat/completions" in server.paths("POST")  # without --wait a failure stops nothing
    checks = by_name(verdict)
    assert verdict["ok"] is False
    assert checks["alias"]["ok"] is True
    assert checks["slots"]["ok"] is False and checks["slots"]["value"] == 4 and checks["slots"]["expected"] == 1
    assert checks["sampling.temp"]["ok"] is False and checks["sampling.temp"]["value"] == 0.8
    assert checks["sampling.top_p"]["ok"] is True
    assert checks["completion"]["ok"] is True
    assert verdict["error"] == checks["slots"]["detail"]  # the first failure's


def test_alias_mismatch(rig):
    with FakeLlamaServer(props=llama_props(alias="gemma-old")) as server:
        verdict, _ = run(rig, expectation(server.url, props={"alias": "gemma"}))
    check = by_name(verdict)["alias"]
    assert check["ok"] is False and check["value"] == "gemma-old" and "gemma-old" in verdict["error"]


@pytest.mark.parametrize("layout", [llama_props, ik_props])
def test_sampling_in_either_layout(rig, layout):
    with FakeLlamaServer(props=layout(temperature=0.60000002, top_p=0.9)) as server:
        verdict, _ = run(rig, expectation(server.url, props={"sampling": {"temp": 0.6, "top_p": 0.95}}))
    checks = by_name(verdict)
    assert checks["sampling.temp"]["ok"] is True  # equal within 1e-4 relative: the server holds floats
    assert checks["sampling.top_p"]["ok"] is False and checks["sampling.top_p"]["value"] == 0.9
    assert verdict["ok"] is False


def test_a_sampling_value_the_server_does_not_report_as_a_number_is_skipped(rig):
    props = llama_props()
    props["default_generation_settings"]["params"]["min_p"] = "0.05"
    with FakeLlamaServer(props=props) as server:
        verdict, _ = run(rig, expectation(server.url, props={"sampling": {"min_p": 0.1, "top_k": 40, "seed": 3}}))
    names = [c["check"] for c in verdict["checks"]]
    assert "sampling.min_p" not in names and "sampling.seed" not in names
    assert by_name(verdict)["sampling.top_k"]["ok"] is True and verdict["ok"] is True


def test_wait_stops_at_the_first_failure(rig):
    with FakeLlamaServer(props=llama_props(alias="other", slots=3)) as server:
        verdict, _ = run(rig, expectation(server.url, props=ALL_PROPS), "--wait", "--inference", "--exposure")
        assert server.paths("POST") == []  # no completion asked for after the failure
    assert [c["check"] for c in verdict["checks"]] == ["unit", "health", "n_ctx", "model_path", "alias"]
    assert verdict["checks"][-1]["ok"] is False and verdict["error"] == verdict["checks"][-1]["detail"]
    assert rig.log("systemd-analyze") == []


def test_props_failing(rig):
    with FakeLlamaServer(props_status=500, props={"error": "boom"}) as server:
        verdict, _ = run(rig, expectation(server.url, props={"n_ctx": 4096}))
    assert verdict["ok"] is False and by_name(verdict)["props"]["ok"] is False and "HTTP 500" in verdict["error"]
    assert "n_ctx" not in by_name(verdict)


# --- the completion --------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, why", [
    (completion(tokens=0), 200, "the completion produced no tokens"),
    ({"choices": [{"message": {"content": ""}}]}, 200, "the completion produced no tokens"),
    ({"error": "what"}, 200, "not a chat completion"),
    ("not json at all", 200, "not a chat completion"),
    ({"error": {"message": "out of memory"}}, 500, "HTTP 500"),
])
def test_a_completion_that_fails(rig, body, status, why):
    with FakeLlamaServer(completion=body, completion_status=status) as server:
        verdict, _ = run(rig, expectation(server.url), "--wait", "--inference")
    check = by_name(verdict)["completion"]
    assert check["ok"] is False and why in check["detail"] and verdict["ok"] is False
    assert verdict["error"] == check["detail"] and verdict["completion_tokens"] is None


def test_a_thinking_models_answer_is_its_reasoning(rig):
    with FakeLlamaServer(completion=completion(content="", reasoning="  Let me think.  ")) as server:
        verdict, _ = run(rig, expectation(server.url), "--inference")
    assert verdict["ok"] and verdict["answer"] == "Let me think."


# --- waiting for the unit --------------------------------------------------------------------

def test_auto_restart_fails_fast(rig, server):
    rig.state("activating", "auto-restart")
    start = time.monotonic()
    verdict, _ = run(rig, expectation(server.url, timeout_s=600), "--wait", "--inference")
    assert time.monotonic() - start < 5
    assert verdict["ok"] is False and [c["check"] for c in verdict["checks"]] == ["unit"]
    assert verdict["error"] == f"{UNIT} exited while starting (systemd is waiting to restart it)"


def test_failed_unit_fails_after_a_grace_not_at_the_deadline(rig, server):
    rig.state("failed", "failed")
    start = time.monotonic()
    verdict, _ = run(rig, expectation(server.url, timeout_s=600), "--wait")
    assert 4.5 < time.monotonic() - start < 15
    assert verdict["ok"] is False and verdict["error"] == f"{UNIT} is failed"


def test_health_timeout(rig):
    with FakeLlamaServer(health=[503]) as server:
        start = time.monotonic()
        verdict, _ = run(rig, expectation(server.url, timeout_s=2), "--wait", "--inference")
        assert time.monotonic() - start < 10
        assert server.paths("POST") == []
    assert verdict["ok"] is False
    assert verdict["error"] == f"{UNIT} did not become healthy in 2 s (last: /health answered 503)"
    assert [c["check"] for c in verdict["checks"]] == ["unit", "health"] and verdict["checks"][0]["ok"]


def test_unit_never_active_times_out_on_the_unit(rig, server):
    rig.state("activating", "start")
    verdict, _ = run(rig, expectation(server.url, timeout_s=1), "--wait")
    assert [c["check"] for c in verdict["checks"]] == ["unit"]
    assert verdict["error"] == f"{UNIT} did not become healthy in 1 s (last: {UNIT} is activating)"


def test_one_look_without_wait(rig, tmp_path):
    rig.state("inactive", "dead")
    with FakeLlamaServer() as server:
        url = server.url
    # The server is gone: nothing answers there any more.
    start = time.monotonic()
    verdict, _ = run(rig, expectation(url, props={"n_ctx": 4096}), "--inference", "--exposure")
    assert time.monotonic() - start < 5
    checks = by_name(verdict)
    assert checks["unit"]["ok"] is False and checks["unit"]["value"] == "inactive"
    assert checks["health"]["ok"] is False and "/health:" in checks["health"]["detail"]
    assert "n_ctx" not in checks and "completion" not in checks  # nothing to ask without /health
    assert checks["exposure"]["ok"] is True  # systemd still answers
    assert verdict["error"] == checks["unit"]["detail"]


# --- the API key -----------------------------------------------------------------------------

def test_the_api_key_is_sent_and_never_printed(rig, tmp_path):
    key_file = tmp_path / "chat.api-key"
    key_file.write_text(CANARY + "\n")
    with FakeLlamaServer(api_key=CANARY) as server:
        verdict, r = run(rig, expectation(server.url, api_key_file=str(key_file), props=ALL_PROPS),
                         "--wait", "--inference", "--exposure", "--journal")
        assert {s.path for s in server.seen} == {"/health", "/props", "/v1/chat/completions"}
        assert all(s.authorization == f"Bearer {CANARY}" for s in server.seen)
    assert verdict["ok"] is True, verdict
    assert CANARY not in r.stdout + r.stderr


def test_a_wrong_api_key_fails_and_is_not_printed(rig, tmp_path):
    key_file = tmp_path / "chat.api-key"
    key_file.write_text(CANARY + "-wrong\nsecond line\n")
    rig.journal(f"server saw key {CANARY}-wrong\n")  # even a journal that would show it
    with FakeLlamaServer(api_key=CANARY) as server:
        verdict, r = run(rig, expectation(server.url, api_key_file=str(key_file)), "--inference", "--journal")
        assert server.seen and all(s.authorization == f"Bearer {CANARY}-wrong" for s in server.seen)
    assert verdict["ok"] is False and by_name(verdict)["health"]["value"] == 401
    assert CANARY not in r.stdout + r.stderr and "journal" in verdict


def test_a_server_echoing_the_key_does_not_get_it_printed(rig, tmp_path):
    key_file = tmp_path / "chat.api-key"
    key_file.write_text(CANARY + "\n")
    echo = {"error": {"message": f"upstream rejected Authorization: Bearer {CANARY}"}}
    with FakeLlamaServer(api_key=CANARY, completion=echo, completion_status=502) as server:
        verdict, r = run(rig, expectation(server.url, api_key_file=str(key_file)), "--inference")
    check = by_name(verdict)["completion"]
    assert check["ok"] is False and "HTTP 502" in check["detail"] and "***" in check["detail"]
    assert CANARY not in r.stdout + r.stderr


def load_checker():
    spec = importlib.util.spec_from_file_location("llamarig_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_error_message_that_would_show_the_key_is_reduced_to_its_type():
    checker = load_checker().Checker(expectation("http://127.0.0.1:1"))
    checker.key = CANARY
    assert checker.describe(ValueError(f"Invalid header value b'Bearer {CANARY}\\r'")) == "ValueError"
    assert checker.describe(OSError("something said Bearer")) == "OSError"
    assert checker.describe(OSError(f"key {CANARY}")) == "OSError"
    assert checker.describe(ConnectionRefusedError(111, "Connection refused")) == \
        "ConnectionRefusedError: [Errno 111] Connection refused"  # the rest are told in full
    checker.key = ""
    assert checker.describe(ValueError("Bearer of bad news")) == "ValueError: Bearer of bad news"


def test_an_unreadable_key_file_is_a_verdict(rig, tmp_path, server):
    verdict, _ = run(rig, expectation(server.url, api_key_file=str(tmp_path / "absent.api-key")), "--wait")
    assert verdict["ok"] is False and "FileNotFoundError" in verdict["error"]
    assert server.seen == []


# --- exposure, journal, crashes --------------------------------------------------------------

def test_exposure_unparsable(rig, server):
    rig.security("Failed to parse unit\n")
    verdict, _ = run(rig, expectation(server.url), "--exposure")
    check = by_name(verdict)["exposure"]
    assert check["ok"] is False and check["grade"] == "measured" and "Failed to parse unit" in check["detail"]
    assert verdict["ok"] is False


def test_the_journal_on_failure_with_journal(rig):
    rig.journal("".join(f"line {i:05d} of the journal\n" for i in range(1000)))
    with FakeLlamaServer(completion=completion(tokens=0)) as server:
        with_journal, _ = run(rig, expectation(server.url), "--wait", "--inference", "--journal")
        without, _ = run(rig, expectation(server.url), "--wait", "--inference")
    assert with_journal["ok"] is False and "journal" not in without
    text = (rig.dir / "journal").read_text()
    assert with_journal["journal"] == text[-6000:] and with_journal["journal"].endswith("line 00999 of the journal\n")
    assert rig.log("journalctl") == [f"-u {UNIT} -n 40 --no-pager -o cat"]


@pytest.mark.parametrize("args", [["--expect-json", "{not json"], ["--expect-json", "[1]"],
                                  ["--expect-json", json.dumps({"unit": UNIT})],
                                  ["--expect", "/nonexistent/expect.json"]])
def test_a_bad_expectation_is_still_one_line_of_json_and_exit_0(rig, args):
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=rig.env, timeout=60)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 1, r.stdout + r.stderr
    verdict = json.loads(r.stdout)
    assert verdict["ok"] is False and verdict["error"] and verdict["checks"][0]["ok"] is False
    assert "Traceback" not in r.stderr


# --- rollback --------------------------------------------------------------------------------

OLD_UNIT = "[Unit]\nDescription=llama-server chat (the one that answered)\n[Service]\nExecStart=/old\n"
NEW_UNIT = "[Unit]\nDescription=llama-server chat (the failed deploy)\n[Service]\nExecStart=/new\n"


def rollback(rig: Rig, record: Path, unit_dir: Path, inline=False) -> subprocess.CompletedProcess:
    args = ["--rollback", str(record), "--unit-dir", str(unit_dir)]
    cmd = [sys.executable, "-c", SCRIPT.read_text(), *args] if inline else [sys.executable, str(SCRIPT), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=rig.env, timeout=60)


@pytest.fixture
def unit_dir(tmp_path):
    path = tmp_path / "system"
    path.mkdir()
    (path / UNIT).write_text(NEW_UNIT)
    return path


def write_record(tmp_path: Path, url: str, text=OLD_UNIT, **expect) -> Path:
    record = tmp_path / "known-good" / f"{UNIT}.json"
    record.parent.mkdir(exist_ok=True)
    record.write_text(json.dumps({"unit": UNIT, "text": text, "expect": expectation(url, **expect)}))
    return record


def test_rollback_without_a_record(rig, tmp_path, unit_dir):
    r = rollback(rig, tmp_path / "known-good" / f"{UNIT}.json", unit_dir)
    assert r.returncode == 1
    assert f"no earlier {UNIT} has answered a check: nothing to roll back to, it is left as it is" in r.stderr
    assert (unit_dir / UNIT).read_text() == NEW_UNIT and rig.log() == []


def test_rollback_when_the_unit_is_already_the_last_that_answered(rig, tmp_path, unit_dir, server):
    record = write_record(tmp_path, server.url, text=NEW_UNIT)
    before = os.stat(unit_dir / UNIT)
    r = rollback(rig, record, unit_dir)
    assert r.returncode == 1 and "already the last unit that answered" in r.stderr
    assert os.stat(unit_dir / UNIT).st_ino == before.st_ino and rig.log() == [] and server.seen == []


def test_rollback_restores_the_unit_and_it_answers_again(rig, tmp_path, unit_dir, server):
    rig.state("failed", "failed")  # the failed deploy's unit; the stand-in's restart makes it active
    record = write_record(tmp_path, server.url)
    (unit_dir / UNIT).chmod(0o600)
    inode = os.stat(unit_dir / UNIT).st_ino
    start = time.monotonic()
    r = rollback(rig, record, unit_dir, inline=True)
    assert time.monotonic() - start < 4.5  # checked after the restart, not waiting out a failed unit
    assert r.returncode == 1  # the deploy failed, even with the old service back
    assert (unit_dir / UNIT).read_text() == OLD_UNIT
    st = os.stat(unit_dir / UNIT)
    assert st.st_mode & 0o777 == 0o644
    assert st.st_ino != inode  # a new file renamed over the old one, not written in place
    assert sorted(p.name for p in unit_dir.iterdir()) == [UNIT]  # no temp file left behind
    assert rig.log() == ["daemon-reload", f"reset-failed {UNIT}", f"restart {UNIT}",
                         f"show -p ActiveState -p SubState --value {UNIT}"]
    assert "/v1/chat/completions" in server.paths("POST")  # checked with --inference
    assert f"llamarig: rolled {UNIT} back" in r.stderr and f"it answers again at {server.url}" in r.stderr
    assert r.stdout == ""


def test_rollback_reports_an_old_unit_that_does_not_answer_either(rig, tmp_path, unit_dir):
    with FakeLlamaServer(completion=completion(tokens=0)) as server:
        record = write_record(tmp_path, server.url)
        r = rollback(rig, record, unit_dir)
    assert r.returncode == 1 and (unit_dir / UNIT).read_text() == OLD_UNIT
    assert "does not answer either" in r.stderr and "the completion produced no tokens" in r.stderr
    assert "answers again" not in r.stderr
    assert f"restart {UNIT}" in rig.log()


def test_rollback_reads_a_record_of_the_release_before_expectations(rig, tmp_path, unit_dir, server):
    """A rig deployed by the previous llamarig keeps {unit, text, url, api_key_file}: it still rolls back."""
    rig.state("failed", "failed")
    record = tmp_path / "known-good" / f"{UNIT}.json"
    record.parent.mkdir()
    record.write_text(json.dumps({"unit": UNIT, "text": OLD_UNIT, "url": server.url, "api_key_file": None}))
    r = rollback(rig, record, unit_dir)
    assert r.returncode == 1 and (unit_dir / UNIT).read_text() == OLD_UNIT
    assert f"it answers again at {server.url}" in r.stderr and "/v1/chat/completions" in server.paths("POST")


# --- a service that answered as it runs now is not asked again (a no-change deploy) ------------

def _answered(rig, tmp_path, expect, unit_text="[Service]\nExecStart=/x\n", started_ago=600, record_text=None):
    units = tmp_path / "units"
    units.mkdir(exist_ok=True)
    (units / UNIT).write_text(unit_text)
    record = tmp_path / "known-good.json"
    record.write_text(json.dumps({"unit": UNIT, "text": record_text or unit_text, "expect": expect}))
    (rig.dir / "active_since").write_text(f"ActiveEnterTimestamp=@{int(time.time()) - started_ago}\n")
    rig.env["LLAMARIG_UNIT_DIR"] = str(units)
    return record


def test_a_service_that_answered_as_it_runs_is_checked_on_health_and_props_only(rig, server, tmp_path):
    expect = expectation(server.url, props={"n_ctx": 4096})
    record = _answered(rig, tmp_path, expect)
    verdict, _ = run(rig, expect, "--wait", "--inference", "--record", str(record))
    assert verdict["ok"] is True, verdict
    assert "unchanged since" in verdict["answered_before"]
    assert [c["check"] for c in verdict["checks"]] == ["unit", "health", "n_ctx"]
    assert [s for s in server.seen if s.method == "POST"] == []     # no completion sent
    assert {s.path for s in server.seen} == {"/health", "/props"}


@pytest.mark.parametrize("why", ["restarted since", "another unit", "another expectation", "no record"])
def test_a_service_that_changed_or_restarted_is_asked_for_a_completion(rig, server, tmp_path, why):
    expect = expectation(server.url)
    record = _answered(rig, tmp_path, expect if why != "another expectation" else dict(expect, max_tokens=7),
                       started_ago=-5 if why == "restarted since" else 600,
                       record_text="[Service]\nExecStart=/old\n" if why == "another unit" else None)
    if why == "no record":
        record.unlink()
    verdict, _ = run(rig, expect, "--wait", "--inference", "--record", str(record))
    assert verdict["ok"] is True and "answered_before" not in verdict, verdict
    assert [s.path for s in server.seen if s.method == "POST"] == ["/v1/chat/completions"]


def test_wait_ready_says_what_it_waits_for_and_exits_0(rig):
    with FakeLlamaServer(health=[503] * 3 + [200]) as server:
        rig.env["LLAMARIG_PROGRESS_S"] = "1"
        r = subprocess.run([sys.executable, str(SCRIPT), "--expect-json", json.dumps(expectation(server.url)),
                            "--wait-ready"], capture_output=True, text=True, env=rig.env, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith(f"waiting for {UNIT} to answer /health at {server.url}:") and "of 30 s)" in line
               for line in lines), lines
    assert lines[-1] == f"{UNIT}: answers /health"
