"""``llamarig verify`` over a rig played locally: its commands run in a local shell with stand-in systemctl and
systemd-analyze (tests/rig_programs/helpers.py), against fake llama-servers on loopback. The checker that runs
is the real one, rig_programs/llamarig-check.py, sent inline as verify sends it; the expectation it gets is the
release's, the one the deploy writes beside the unit."""

from __future__ import annotations

import contextlib
import json
import shlex
import socket
import subprocess
import textwrap
from pathlib import Path

import pytest

from llamarig import layout
from llamarig.commands import cli
from llamarig.commands import verify as verifycli
from llamarig.lookups.hub import HubError
from tests.rig_programs.fakeserver import FakeLlamaServer, completion, ik_props, llama_props
from tests.rig_programs.helpers import Rig

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "ssh-Pa55-CANARY"
R1_MODEL = "/var/lib/llamarig/models/gemma/main/g-00001-of-00002.gguf"  # revision main, not resolved: any dir


def inventory(port1: int, port2: int, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        rigs = [
            ("r1", {{"ssh_hostname": "10.0.0.1", "ssh_user": "root", "ssh_password": {PASSWORD!r},
                    "gpus": [{{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}}] * 2,
                    "models": {{"gemma": {{"repo": "acme/gemma-GGUF", "file": "g-00001-of-00002.gguf"}}}},
                    "services": [{{"name": "chat", "model": "gemma", "port": {port1}, "ctx_size": 4096, "parallel": 1,
                                  "alias": "gemma", "sampling": {{"temp": 0.7}}{extra}}}]}}),
            ("r2", {{"ssh_hostname": "10.0.0.2", "ssh_port": 2222,
                    "models": {{"gemma": {{"repo": "acme/gemma-GGUF"}}}},
                    "services": [{{"name": "chat", "model": "gemma", "port": {port2}, "ctx_size": 2048}}]}}),
        ]
    """)


class LocalRig:
    """One rig: a fake llama-server, stand-in systemd commands, and the commands it was sent."""

    def __init__(self, root: Path, **server):
        self.stand_ins = Rig(root)
        self.stand_ins.security("→ Overall exposure level for llamarig-chat.service: 1.4 OK :-)\n")
        self.server = FakeLlamaServer(**server).__enter__()
        self.commands: list[str] = []

    @property
    def port(self) -> int:
        return int(self.server.url.rsplit(":", 1)[1])

    def run(self, command: str, timeout: float = 30):
        self.commands.append(command)
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout,
                              env=self.stand_ins.env)
        return done.returncode, done.stdout, done.stderr

    def expectation(self) -> dict:
        """The expectation verify sent to the checker (its --expect-json argument)."""
        words = shlex.split(self.commands[-1])
        return json.loads(words[words.index("--expect-json") + 1])


@pytest.fixture
def rigs(monkeypatch, tmp_path):
    """{host: LocalRig or an exception to raise on connect}; patches the SSH access and the Hub, writes the inventory."""
    monkeypatch.chdir(ROOT)  # group_data/all.py gives the defaults, as for pyinfra run from the repo
    fleet = {
        "r1": LocalRig(tmp_path / "r1", props=llama_props(4096, alias="gemma", model_path=R1_MODEL, temperature=0.7)),
        "r2": LocalRig(tmp_path / "r2", props=llama_props(2048, alias="x", model_path="/var/lib/llamarig/models/gemma/"
                                                          "0123456789ab/Q4/x.gguf", temperature=0.8)),
    }
    inv = tmp_path / "rigs.py"
    inv.write_text(inventory(fleet["r1"].port, fleet["r2"].port))
    connects = []

    @contextlib.contextmanager
    def fake_ssh(host, data):
        connects.append((host, data))
        rig = fleet[host]
        if isinstance(rig, Exception):
            raise rig
        yield rig.run

    def no_hub(name, model, endpoint, token):
        raise HubError("the Hub is not asked in these tests")

    monkeypatch.setattr(verifycli, "ssh_rig", fake_ssh)
    lookups = verifycli.lookups()
    monkeypatch.setattr(verifycli, "lookups", lambda: __import__("dataclasses").replace(lookups, hub_model=no_hub))
    fleet["inventory"] = str(inv)
    fleet["connects"] = connects
    yield fleet
    for rig in fleet.values():
        if isinstance(rig, LocalRig):
            rig.server.__exit__(None, None, None)


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
                                            "ok": None, "value": rigs["r1"].port, "expected": None}
    assert seen[("r1", "chat", "gpus")]["value"] == [0, 1]
    assert seen[("r2", "chat", "gpus")]["value"] == []
    for check in ("unit", "health", "n_ctx", "model_path", "alias", "slots", "sampling.temp"):
        assert seen[("r1", "chat", check)]["grade"] == "live" and seen[("r1", "chat", check)]["ok"] is True, check
    assert seen[("r1", "chat", "n_ctx")]["value"] == 4096 and seen[("r1", "chat", "n_ctx")]["expected"] == 4096
    assert seen[("r1", "chat", "exposure")]["grade"] == "measured" and seen[("r1", "chat", "exposure")]["value"] == 1.4
    done = seen[("r1", "chat", "completion")]
    assert done["grade"] == "measured" and done["ok"] is True and done["value"]["completion_tokens"] == 5
    # r2 declares no model file and the Hub was not reached: only the model's folder is expected
    assert seen[("r2", "chat", "model_path")]["ok"] is True
    assert ("r2", "chat", "alias") not in seen and ("r2", "chat", "sampling.temp") not in seen
    assert [host for host, _ in rigs["connects"]] == ["r1", "r2"]
    assert rigs["connects"][0][1]["ssh_hostname"] == "10.0.0.1"
    post = [s for s in rigs["r1"].server.seen if s.path == "/v1/chat/completions"][0]
    assert post.body["messages"][0]["content"] == "Reply with one short friendly sentence." and post.body["max_tokens"] == 24


def test_verify_sends_the_checker_the_expectation_the_deploy_writes(rigs, capsys):
    from llamarig.hostdata.inventory import load_checked
    from llamarig.release.assemble import RigFacts, make_release
    from llamarig.release.resolve import resolve_rig

    verify(rigs, "--json", capsys=capsys)
    _, docs = load_checked(rigs["inventory"])
    rig, problems = resolve_rig("r1", docs["r1"], verifycli.lookups(), preview=True)
    assert not problems
    assert rigs["r1"].expectation() == make_release(rig, RigFacts(False)).units["llamarig-chat.service"].expect
    assert "python3 -c" in rigs["r1"].commands[-1] and "llamarig-check.py" in rigs["r1"].commands[-1]


def test_text_lines_name_host_service_grade_and_outcome(rigs, capsys):
    code, out, _ = verify(rigs, "--host", "r1", capsys=capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert "r1 chat [configured] ctx_size: 4096" in lines
    assert "r1 chat [configured] gpus: 0,1 (NVIDIA GeForce RTX 3090)" in lines
    assert any(line.startswith("r1 chat [live] ok unit: ") for line in lines)
    assert any(line.startswith("r1 chat [live] ok n_ctx: ") for line in lines)
    assert any(line.startswith("r1 chat [measured] ok exposure: ") for line in lines)
    assert not any(line.startswith("r2") for line in lines)  # --host selects
    assert not any("completion" in line for line in lines)  # no --inference, no completion
    assert [host for host, _ in rigs["connects"]] == ["r1"]


def test_an_inactive_unit_fails_and_exits_1(rigs, capsys):
    rigs["r2"].stand_ins.state("inactive", "dead")
    rigs["r2"].server.config.health = [503]
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    seen = checks_of(out)
    assert seen[("r2", "chat", "unit")]["ok"] is False and seen[("r2", "chat", "health")]["ok"] is False
    assert all(c["ok"] is not False for c in json.loads(out) if c["host"] == "r1")  # the other rig still passes
    code, out, _ = verify(rigs, "--host", "r2", capsys=capsys)
    assert code == 1 and any(line.startswith("r2 chat [live] FAILED unit: ") for line in out.splitlines())


def test_a_wrong_n_ctx_fails_with_what_was_expected(rigs, capsys):
    rigs["r1"].server.config.props = llama_props(2048, alias="gemma", model_path=R1_MODEL, temperature=0.7)
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    n_ctx = checks_of(out)[("r1", "chat", "n_ctx")]
    assert (n_ctx["ok"], n_ctx["value"], n_ctx["expected"]) == (False, 2048, 4096)
    assert checks_of(out)[("r2", "chat", "n_ctx")]["ok"] is True


def test_model_alias_slots_and_sampling_mismatches_fail(rigs, capsys):
    rigs["r1"].server.config.props = llama_props(4096, slots=2, alias="other", model_path="/elsewhere/g.gguf",
                                                 temperature=0.3)
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    seen = checks_of(out)
    assert {k[2] for k, c in seen.items() if c["ok"] is False} == {"model_path", "alias", "slots", "sampling.temp"}
    assert seen[("r1", "chat", "model_path")]["expected"] == "/var/lib/llamarig/models/gemma/*/g-00001-of-00002.gguf"
    assert seen[("r1", "chat", "n_ctx")]["ok"] is True  # 4096 with 2 slots: the unified cache's whole context


def test_ik_llama_cpp_props_are_read_too(rigs, capsys):
    rigs["r1"].server.config.props = ik_props(4096, alias="gemma", model_path=R1_MODEL, temperature=0.3)
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1 and checks_of(out)[("r1", "chat", "sampling.temp")]["ok"] is False


def test_a_setting_extra_args_override_is_not_compared(rigs, capsys):
    Path(rigs["inventory"]).write_text(inventory(rigs["r1"].port, rigs["r2"].port,
                                                 ', "extra_args": ["--temperature", "0.3"]'))
    rigs["r1"].server.config.props = llama_props(4096, alias="gemma", model_path=R1_MODEL, temperature=0.3)
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 0, out
    assert ("r1", "chat", "sampling.temp") not in checks_of(out)


def test_an_unreachable_rig_is_a_failed_line_and_the_others_are_still_checked(rigs, capsys):
    import paramiko

    rigs["r1"].server.__exit__(None, None, None)
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


def test_a_checker_that_cannot_run_is_a_failed_line(rigs, capsys, monkeypatch):
    monkeypatch.setattr(rigs["r1"], "run", lambda command, timeout=30: (127, "", "sh: python3: not found"))
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    line = checks_of(out)[("r1", "chat", "check")]
    assert line["ok"] is False and "python3: not found" in line["value"]


def test_the_real_ssh_access_reports_a_closed_port_as_unreachable(monkeypatch, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.chdir(ROOT)
    (tmp_path / "one.py").write_text(textwrap.dedent(f"""\
        rigs = [("lonely", {{"ssh_hostname": "127.0.0.1", "ssh_port": {port}, "ssh_user": "root",
                            "ssh_password": {PASSWORD!r}, "ssh_strict_host_key_checking": "no",
                            "hub_endpoint": "http://127.0.0.1:9",
                            "models": {{"m": {{"repo": "a/m-GGUF"}}}},
                            "services": [{{"name": "s", "model": "m", "port": 8080}}]}})]
    """))
    code = cli.main(["verify", str(tmp_path / "one.py")])
    out, err = capsys.readouterr()
    assert code == 1
    assert f"lonely - [live] FAILED ssh: lonely unreachable at root@127.0.0.1:{port}" in out
    assert PASSWORD not in out + err


def test_bad_data_prints_the_problems_and_exits_1_without_touching_a_rig(rigs, capsys):
    Path(rigs["inventory"]).write_text(inventory(rigs["r1"].port, 99999))
    code, out, err = verify(rigs, capsys=capsys)
    assert code == 1
    assert "r2: services[0].port = 99999: expected a value of at most 65535" in err
    assert "Traceback" not in err and out == ""
    assert rigs["connects"] == []


def test_a_broken_inventory_file_is_exit_1_and_usage_errors_exit_2(rigs, capsys, tmp_path):
    text = Path(rigs["inventory"]).read_text()
    Path(rigs["inventory"]).write_text("rigs = [\n")
    code, out, err = verify(rigs, capsys=capsys)
    assert code == 1 and "could not be loaded: SyntaxError" in err and "Traceback" not in err
    assert cli.main(["verify", str(tmp_path / "missing.py")]) == 2
    assert "no such inventory file" in capsys.readouterr().err
    Path(rigs["inventory"]).write_text(text)
    code, out, err = verify(rigs, "--host", "nope", capsys=capsys)
    assert code == 2 and "no host nope" in err and rigs["connects"] == []
    with pytest.raises(SystemExit) as exc:
        cli.main(["verify"])
    assert exc.value.code == 2


def test_a_failed_completion_fails_the_measured_line(rigs, capsys):
    rigs["r2"].server.config.completion = completion(content="", tokens=0)
    code, out, _ = verify(rigs, "--json", "--inference", capsys=capsys)
    assert code == 1
    done = checks_of(out)[("r2", "chat", "completion")]
    assert done["ok"] is False


def test_an_unparsable_exposure_fails_the_measured_line(rigs, capsys):
    rigs["r1"].stand_ins.security("no exposure here\n")
    code, out, _ = verify(rigs, "--json", capsys=capsys)
    assert code == 1
    assert checks_of(out)[("r1", "chat", "exposure")]["ok"] is False


def test_the_api_key_is_sent_from_the_rigs_file_and_shown_nowhere(rigs, capsys, monkeypatch, tmp_path):
    key = "sk-unit-CANARY-0042"
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "chat.api-key").write_text(key + "\n")
    monkeypatch.setattr(layout, "CREDENTIALS_DIR", str(tmp_path / "creds"))
    monkeypatch.setenv("NOT_READ_HERE", "x")
    Path(rigs["inventory"]).write_text(inventory(rigs["r1"].port, rigs["r2"].port, ', "api_key_env": "NOT_READ_HERE"'))
    rigs["r1"].server.config.api_key = key
    code, out, err = verify(rigs, "--json", "--inference", capsys=capsys)
    assert code == 0, out + err
    assert {s.authorization for s in rigs["r1"].server.seen} == {f"Bearer {key}"}
    assert key not in out + err and not any(key in c for c in rigs["r1"].commands)
