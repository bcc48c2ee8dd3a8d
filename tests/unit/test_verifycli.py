"""``llamarig verify`` with the SSH access replaced by canned rig answers (no rig, no network but loopback)."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from llamarig.commands import cli
from llamarig.commands import verify as verifycli

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "ssh-Pa55-CANARY"

INVENTORY = """\
rigs = [
    ("r1", {"ssh_hostname": "10.0.0.1", "ssh_user": "root", "ssh_password": %(pw)r,
            "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 2,
            "models": {"gemma": {"repo": "acme/gemma-GGUF", "include": ["*.gguf"], "file": "g-00001-of-00002.gguf"}},
            "services": [{"name": "chat", "model": "gemma", "port": 8080, "ctx_size": 4096, "parallel": 1,
                          "alias": "gemma", "sampling": {"temp": 0.7}}]}),
    ("r2", {"ssh_hostname": "10.0.0.2", "ssh_port": 2222,
            "models": {"gemma": {"repo": "acme/gemma-GGUF", "include": ["*.gguf"]}},
            "services": [{"name": "chat", "model": "gemma", "port": 8081, "ctx_size": 2048}]}),
]
""" % {"pw": PASSWORD}


def props(n_ctx=4096, slots=1, path="/var/lib/llamarig/models/gemma/0123456789ab/g-00001-of-00002.gguf", temp=0.699999988079071,
          alias="gemma"):
    return {"default_generation_settings": {"n_ctx": n_ctx, "params": {"temperature": temp, "top_k": 40}},
            "total_slots": slots, "model_path": path, "model_alias": alias}


def answer(status=200, body=None, error=None, seconds=0.5):
    out = {"seconds": seconds}
    if error:
        out["error"] = error
    else:
        out.update(status=status, body=body if isinstance(body, str) else json.dumps(body))
    return json.dumps(out) + "\n"


COMPLETION = {"choices": [{"message": {"content": "Hello!"}}], "usage": {"completion_tokens": 6},
              "timings": {"predicted_per_second": 55.5}}


class FakeRig:
    """Canned answers of one rig, by what the command asks for."""

    def __init__(self, state="active", props_body=None, exposure="1.4", health=200, completion=COMPLETION):
        self.answers = {
            "systemctl is-active": (0 if state == "active" else 3, state + "\n", ""),
            "/health": (0, answer(health, {"status": "ok"}) if health else answer(error="URLError: [Errno 111] Connection refused"), ""),
            "/props": (0, answer(200, props_body or props()) if health else answer(error="URLError: refused"), ""),
            "systemd-analyze security": (0, f"  NAME  DESCRIPTION  EXPOSURE\n→ Overall exposure level for llamarig-chat.service: {exposure} OK :-)\n", ""),
            "/v1/chat/completions": (0, answer(200, completion, seconds=0.25), ""),
        }
        self.commands: list[str] = []

    def run(self, command, timeout=30):
        self.commands.append(command)
        for needle, result in self.answers.items():
            if needle in command:
                return result
        raise AssertionError(f"unexpected command on the rig: {command}")


@pytest.fixture
def rigs(monkeypatch, tmp_path):
    """{host: FakeRig or an exception to raise on connect}; patches the SSH access and writes the inventory."""
    monkeypatch.chdir(ROOT)  # group_data/all.py gives the defaults, as for pyinfra run from the repo
    (tmp_path / "rigs.py").write_text(INVENTORY)
    fleet = {"r1": FakeRig(props_body=props()), "r2": FakeRig(props_body=props(2048, path="/var/lib/llamarig/models/gemma/0123456789ab/Q4/x.gguf",
                                                                               temp=0.8, alias="x"))}
    connects = []

    @contextlib.contextmanager
    def fake_ssh(host, data):
        connects.append((host, data))
        rig = fleet[host]
        if isinstance(rig, Exception):
            raise rig
        yield rig.run

    monkeypatch.setattr(verifycli, "ssh_rig", fake_ssh)
    fleet["inventory"] = str(tmp_path / "rigs.py")
    fleet["connects"] = connects
    return fleet


def verify(rigs, *args, capsys):
    code = cli.main(["verify", rigs["inventory"], *args])
    out, err = capsys.readouterr()
    return code, out, err


def checks_of(out: str) -> dict:
    return {(c["host"], c["service"], c["check"]): c for c in json.loads(out)}


def test_a_healthy_rig_passes_every_check_graded(rigs, capsys):
    code, out, err = verify(rigs, "--json", "--inference", capsys=capsys)
    assert code == 0, out + err
    seen = checks_of(out)
    assert set(json.loads(out)[0]) == {"host", "service", "check", "grade", "ok", "value", "expected"}
    assert seen[("r1", "chat", "port")] == {"host": "r1", "service": "chat", "check": "port", "grade": "configured",
                                            "ok": None, "value": 8080, "expected": None}
    assert seen[("r1", "chat", "gpus")]["value"] == [0, 1]
    assert seen[("r2", "chat", "gpus")]["value"] == []
    for check in ("unit", "health", "n_ctx", "model_path", "alias", "slots", "sampling.temp"):
        assert seen[("r1", "chat", check)]["grade"] == "live" and seen[("r1", "chat", check)]["ok"] is True, check
    assert seen[("r1", "chat", "n_ctx")]["value"] == 4096 and seen[("r1", "chat", "n_ctx")]["expected"] == 4096
    assert seen[("r1", "chat", "exposure")] == {"host": "r1", "service": "chat", "check": "exposure", "grade": "measured",
                                                "ok": True, "value": 1.4, "expected": None}
    completion = seen[("r1", "chat", "completion")]
    assert completion["grade"] == "measured" and completion["ok"] is True
    assert completion["value"] == {"completion_tokens": 6, "latency_s": 0.25, "tokens_per_s": 55.5, "answer": "Hello!"}
    # r2 declares no model file (resolved on the Hub at deploy), no alias, no parallel, no sampling: only the model's folder
    assert seen[("r2", "chat", "model_path")]["ok"] is True
    assert ("r2", "chat", "alias") not in seen and ("r2", "chat", "sampling.temp") not in seen
    # The SSH access got pyinfra's connection data, and the completion asked with the host's verify settings.
    assert [host for host, _ in rigs["connects"]] == ["r1", "r2"]
    assert rigs["connects"][0][1]["ssh_hostname"] == "10.0.0.1"
    post = next(c for c in rigs["r1"].commands if "/v1/chat/completions" in c)
    assert "Reply with one short friendly sentence." in post and '"max_tokens": 24' in post


def test_text_lines_name_host_service_grade_and_outcome(rigs, capsys):
    code, out, _ = verify(rigs, "--host", "r1", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert "r1 chat [configured] ctx_size: 4096" in lines
    assert "r1 chat [configured] gpus: 0,1 (NVIDIA GeForce RTX 3090)" in lines
    assert "r1 chat [live] ok unit: llamarig-chat.service active" in lines
    assert "r1 chat [live] ok n_ctx: 4096 per slot, 1 slot(s)" in lines
    assert "r1 chat [measured] ok exposure: 1.4" in lines
    assert not any(line.startswith("r2") for line in lines)  # --host selects
    assert not any("completion" in line for line in lines)  # no --inference, no completion
    assert [host for host, _ in rigs["connects"]] == ["r1"]


def test_an_inactive_unit_fails_and_exits_1(rigs, capsys):
    rigs["r2"] = FakeRig(state="inactive", health=None)
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    seen = checks_of(out)
    assert seen[("r2", "chat", "unit")]["ok"] is False and seen[("r2", "chat", "unit")]["value"] == "inactive"
    assert seen[("r2", "chat", "health")]["ok"] is False
    assert seen[("r2", "chat", "props")]["ok"] is False
    assert all(c["ok"] is not False for c in json.loads(out) if c["host"] == "r1")  # the other rig still passes
    code, out, _ = verify(rigs, "--host", "r2", capsys=capsys)
    assert code == 1
    assert "r2 chat [live] FAILED unit: llamarig-chat.service inactive (expected active)" in out.splitlines()


def test_a_wrong_n_ctx_fails_with_what_was_expected(rigs, capsys):
    rigs["r1"] = FakeRig(props_body=props(n_ctx=2048, slots=1))
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    n_ctx = checks_of(out)[("r1", "chat", "n_ctx")]
    assert (n_ctx["ok"], n_ctx["value"], n_ctx["expected"]) == (False, 2048, 4096)
    assert checks_of(out)[("r2", "chat", "n_ctx")]["ok"] is True
    code, out, _ = verify(rigs, "--host", "r1", capsys=capsys)
    assert "r1 chat [live] FAILED n_ctx: 2048 per slot, 1 slot(s) (expected 4096)" in out.splitlines()


def test_n_ctx_per_slot_follows_the_deploys_rule():
    # llama.cpp reports one slot's context: all of it with a unified KV cache, else declared // slots.
    assert verifycli.ctx_matches(4096, 4096, 4)
    assert verifycli.ctx_matches(1024, 4096, 4)
    assert not verifycli.ctx_matches(2048, 4096, 4)
    assert not verifycli.ctx_matches(2048, 4096, 1)
    assert not verifycli.ctx_matches(None, 4096, 1)
    # The same rule as the deploy's check on the rig (templates/llamarig-verify.py): change both or neither.
    template = (ROOT / "templates" / "llamarig-verify.py").read_text()
    assert "if n_ctx not in (args.ctx, args.ctx // slots):" in template


def test_model_alias_slots_and_sampling_mismatches_fail(rigs, capsys):
    rigs["r1"] = FakeRig(props_body=props(path="/elsewhere/g.gguf", alias="other", slots=2, temp=0.3))
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    seen = checks_of(out)
    failed = {k[2] for k, c in seen.items() if c["ok"] is False}
    assert failed == {"model_path", "alias", "slots", "sampling.temp"}
    assert seen[("r1", "chat", "model_path")]["expected"] == "/var/lib/llamarig/models/gemma/*/g-00001-of-00002.gguf"
    assert seen[("r1", "chat", "n_ctx")]["ok"] is True  # 4096 with 2 slots: the unified cache's whole context


def test_a_setting_extra_args_override_is_not_compared(rigs, capsys):
    text = INVENTORY.replace('"sampling": {"temp": 0.7}', '"sampling": {"temp": 0.7}, "extra_args": ["--temperature", "0.3"]')
    Path(rigs["inventory"]).write_text(text)
    rigs["r1"] = FakeRig(props_body=props(temp=0.3))
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 0, out
    assert ("r1", "chat", "sampling.temp") not in checks_of(out)


def test_an_unreachable_rig_is_a_failed_line_and_the_others_are_still_checked(rigs, capsys):
    import paramiko

    rigs["r1"] = paramiko.AuthenticationException("Authentication failed.")
    code, out, err = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    seen = checks_of(out)
    ssh = seen[("r1", None, "ssh")]
    assert ssh["ok"] is False and ssh["grade"] == "live"
    assert ssh["value"].startswith("r1 unreachable at root@10.0.0.1:22: AuthenticationException")
    assert all(c["ok"] for c in json.loads(out) if c["host"] == "r2" and c["grade"] != "configured")
    code, out, err = verify(rigs, capsys=capsys)
    assert "r1 - [live] FAILED ssh: r1 unreachable at root@10.0.0.1:22" in out
    assert PASSWORD not in out + err


def test_the_real_ssh_access_reports_a_closed_port_as_unreachable(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.chdir(ROOT)
    (tmp_path / "one.py").write_text(textwrap.dedent(f"""\
        rigs = [("lonely", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}, "ssh_user": "root",
                            "ssh_password": {PASSWORD!r}, "ssh_strict_host_key_checking": "no",
                            "models": {{"m": {{"repo": "a/m-GGUF"}}}},
                            "services": [{{"name": "s", "model": "m", "port": 8080}}]}})]
    """))
    code = cli.main(["verify", str(tmp_path / "one.py")])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"lonely - [live] FAILED ssh: lonely unreachable at root@127.0.0.1:{port}" in out
    assert PASSWORD not in out + err


def test_bad_data_prints_the_problems_and_exits_1_without_touching_a_rig(rigs, capsys):
    Path(rigs["inventory"]).write_text(INVENTORY.replace('"port": 8081', '"port": 99999'))
    code, out, err = verify(rigs, capsys=capsys)
    assert code == 1
    assert "r2: services[0].port = 99999: expected a value <= 65535" in err
    assert "Traceback" not in err and out == ""
    assert rigs["connects"] == []


def test_a_broken_inventory_file_is_exit_1_and_usage_errors_exit_2(rigs, capsys, tmp_path):
    Path(rigs["inventory"]).write_text("rigs = [\n")
    code, out, err = verify(rigs, capsys=capsys)
    assert code == 1 and "could not be loaded: SyntaxError" in err and "Traceback" not in err
    assert cli.main(["verify", str(tmp_path / "missing.py")]) == 2
    assert "no such inventory file" in capsys.readouterr().err
    Path(rigs["inventory"]).write_text(INVENTORY)
    code, out, err = verify(rigs, "--host", "nope", capsys=capsys)
    assert code == 2 and "no host nope" in err and rigs["connects"] == []
    with pytest.raises(SystemExit) as exc:
        cli.main(["verify"])
    assert exc.value.code == 2


def test_a_failed_completion_fails_the_measured_line(rigs, capsys):
    rigs["r2"] = FakeRig(props_body=props(2048, path="/var/lib/llamarig/models/gemma/0123456789ab/x.gguf"),
                         completion={"choices": [{"message": {"content": ""}}], "usage": {"completion_tokens": 0}})
    code, out, _ = verify(rigs, "--json", "--inference", capsys=capsys)
    assert code == 1
    completion = checks_of(out)[("r2", "chat", "completion")]
    assert completion["ok"] is False and "no tokens" in completion["value"]


def test_an_unparsable_exposure_fails_the_measured_line(rigs, capsys):
    rigs["r1"] = FakeRig(props_body=props(), exposure="unknown")
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    assert checks_of(out)[("r1", "chat", "exposure")]["ok"] is False


class FakeServer(http.server.BaseHTTPRequestHandler):
    """A loopback llama-server that demands an API key."""
    key = "sk-unit-CANARY-0042"
    seen: list = []

    def log_message(self, *args):
        pass

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.headers.get("Authorization") != f"Bearer {self.key}":
            return self._send(401, {"error": "Invalid API Key"})
        self._send(200, {"status": "ok"} if self.path == "/health" else props(n_ctx=2048, path="/m/gemma/0123456789ab/x.gguf"))

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers.get("Authorization")))
        self._send(200, COMPLETION)


def test_the_probe_runs_http_on_the_rig_and_sends_the_api_key_from_the_rigs_file(monkeypatch, tmp_path, capsys):
    """The real probe command, run by a local shell as the rig's would, against a server that needs the key."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key_file = tmp_path / "chat.api-key"
    key_file.write_text(FakeServer.key + "\n")
    monkeypatch.setattr(verifycli.layout, "api_key_file", lambda name: str(key_file))
    monkeypatch.chdir(ROOT)
    (tmp_path / "k.py").write_text(textwrap.dedent(f"""\
        rigs = [("r", {{"models_dir": "/m", "models": {{"gemma": {{"repo": "a/gemma-GGUF"}}}},
                       "services": [{{"name": "chat", "model": "gemma", "port": {server.server_address[1]},
                                      "ctx_size": 2048, "api_key_env": "NOT_READ_HERE"}}]}})]
    """))

    @contextlib.contextmanager
    def local_rig(host, data):
        def run(command, timeout=30):
            if command.startswith("systemctl is-active"):
                return 0, "active\n", ""
            if command.startswith("systemd-analyze"):
                return 0, "→ Overall exposure level for llamarig-chat.service: 1.2 OK\n", ""
            done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)
            return done.returncode, done.stdout, done.stderr
        yield run

    monkeypatch.setattr(verifycli, "ssh_rig", local_rig)
    try:
        code = cli.main(["verify", str(tmp_path / "k.py"), "--inference", "--json"])
        out, err = capsys.readouterr()
        key_file.unlink()
        code_without_key = cli.main(["verify", str(tmp_path / "k.py"), "--json"])
        out_without_key, _ = capsys.readouterr()
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, out + err
    seen = checks_of(out)
    assert seen[("r", "chat", "health")]["value"] == 200
    assert seen[("r", "chat", "n_ctx")]["ok"] is True
    assert seen[("r", "chat", "completion")]["value"]["completion_tokens"] == 6
    assert {path for path, _ in FakeServer.seen} == {"/health", "/props", "/v1/chat/completions"}
    assert FakeServer.seen and all(auth == f"Bearer {FakeServer.key}" for _, auth in FakeServer.seen)
    assert FakeServer.key not in out + err

    # Without the key file on the rig the probe cannot ask, and the line says why.
    assert code_without_key == 1
    assert "FileNotFoundError" in checks_of(out_without_key)[("r", "chat", "health")]["value"]
