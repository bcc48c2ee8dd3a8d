"""Secrets read on the controller: refused when they could not travel intact, and never shown in the refusal."""

import pytest

from llamarig.lookups.secrets import SecretError, read_secret


@pytest.mark.parametrize("value", ["sk-ab\x01cd", "sk-ab\rcd", "sk\x7fx", "sk-\x1b[31m"])
def test_a_secret_with_a_control_character_is_refused_and_not_shown(monkeypatch, tmp_path, value):
    monkeypatch.setenv("THE_KEY", value)
    with pytest.raises(SecretError) as exc:
        read_secret("THE_KEY", None, "services chat API key", required=True)
    assert "control character" in str(exc.value) and value not in str(exc.value) and "sk" not in str(exc.value)
    path = tmp_path / "key"
    path.write_text(value + "\n")
    with pytest.raises(SecretError) as exc:
        read_secret(None, str(path), "hub token", required=False)
    # a carriage return reads as a line break in a text file: refused as a second line
    assert ("control character" in str(exc.value) or "more than one line" in str(exc.value)) and value not in str(exc.value)


def test_a_plain_secret_is_read_trimmed(monkeypatch, tmp_path):
    monkeypatch.setenv("THE_KEY", "  sk-plain-123\n")
    assert read_secret("THE_KEY", None, "k", required=True) == "sk-plain-123"
    (tmp_path / "key").write_text("hf_abc\r\n")
    assert read_secret(None, str(tmp_path / "key"), "k", required=False) == "hf_abc"


def test_llamarig_check_reads_the_controllers_secrets_without_showing_them(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from llamarig.commands import cli

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    inv = tmp_path / "inv.py"
    inv.write_text('rigs = [("r1", {"gpus": [], "models": {"g": {"repo": "a/g-GGUF", "file": "g.gguf"}},\n'
                   '    "services": [{"name": "chat", "model": "g", "port": 8080, "api_key_env": "CHECK_KEY"}]})]\n')
    monkeypatch.delenv("CHECK_KEY", raising=False)
    assert cli.main(["check", str(inv)]) == 1
    assert "r1: services[0].api_key_env = 'CHECK_KEY': expected a readable API key" in capsys.readouterr().err
    monkeypatch.setenv("CHECK_KEY", "sk-check-CANARY")
    assert cli.main(["check", str(inv)]) == 0
    out, err = capsys.readouterr()
    assert "data is valid" in out and "sk-check-CANARY" not in out + err
