"""Every rendered unit of the example rigs, GPU and CPU variants, rates 1.5 or lower with
`systemd-analyze security --offline=yes` (NixOS's llama-cpp module: 1.5)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llamarig.hostdata.inventory import load_inventory
from llamarig.hostdata.validate import validate_all, validate_host
from tests.unit.helpers import rig, unit_text

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 1.5


def exposure(tmp_path: Path, name: str, text: str) -> float:
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is needed (Debian package systemd; scripts/setup.sh installs it)")
    unit = tmp_path / name
    unit.write_text(text)
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, cwd=tmp_path)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    return float(m.group(1))


def example_units():
    out = []
    for inventory in ("inventory/home.py", "inventory/seeds.py", "inventory/rpc.py"):
        docs, problems = validate_all([(e.name, e.data) for e in load_inventory(str(ROOT / inventory))])
        assert not problems
        for host, doc in docs.items():
            for svc in doc["services"]:
                out.append((f"{host}-{svc['name']}", doc, svc))
    return out


UNITS = example_units()


@pytest.mark.parametrize("label, doc, svc", UNITS, ids=[u[0] for u in UNITS])
def test_example_gpu_units_are_hardened(tmp_path, label, doc, svc):
    files = {name: "model-00001-of-00002.gguf" for name in doc["models"]}
    text = unit_text(label, doc, svc["name"], files=files)
    assert "DevicePolicy=closed" in text and "DeviceAllow=char-nvidiactl rw" in text
    assert "PrivateDevices=no" in text
    score = exposure(tmp_path, f"llamarig-{svc['name']}.service", text)
    assert score <= LIMIT, f"{label}: exposure {score}"


def test_cpu_rig_unit_has_private_devices_and_is_hardened(tmp_path):
    doc, errs = validate_host("cpu", rig(gpus=[]))
    assert not errs
    text = unit_text("cpu", doc)
    assert "PrivateDevices=yes" in text and "DeviceAllow" not in text and "CUDA_CACHE_PATH" not in text
    assert exposure(tmp_path, "llamarig-chat.service", text) <= LIMIT


def test_api_key_reaches_the_unit_only_as_a_credential(tmp_path, monkeypatch):
    canary = "sk-canary-7f3a9c"
    monkeypatch.setenv("CHAT_KEY", canary)
    data = rig()
    data["services"][0]["api_key_env"] = "CHAT_KEY"
    doc, errs = validate_host("r1", data)
    assert not errs
    text = unit_text("r1", doc)
    assert canary not in text
    assert "LoadCredential=api-key:/etc/llamarig/credentials/chat.api-key" in text
    assert re.search(r"^ExecStart=.* --api-key-file %d/api-key$", text, re.M)
    assert exposure(tmp_path, "llamarig-chat.service", text) <= LIMIT


def test_a_key_on_the_command_line_is_refused():
    data = rig()
    data["services"][0]["extra_args"] = ["--api-key", "hunter2"]
    problems = [str(p) for p in validate_host("r1", data)[1]]
    assert any("services[0].extra_args" in p and "readable by every local user" in p for p in problems)
    both = copy.deepcopy(rig())
    both["services"][0].update(api_key_env="A", api_key_file="/k")
    assert any("api_key_file" in str(p) for p in validate_host("r1", both)[1])
