"""Run deploy.py whole against rigs played by pyinfra's ``@fake`` connector (tests/deploy/fakerig.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from testbed.fakehub import FakeHub

ROOT = Path(__file__).resolve().parents[2]
PYINFRA = Path(sys.executable).with_name("pyinfra")
COMMIT = "1234567890abcdef1234567890abcdef12345678"
MODEL_BYTES = b"GGUF" + bytes(range(256)) * 4

# What every fake rig answers (after a test's own responses): a Debian with the service user, no GPU.
BASE_RESPONSES = [
    ["cat /etc/passwd | cut -d: -f1", "root:x:0:0:root:/root:/bin/bash|root|root||\n"
                                      "llama:x:999:999::/var/lib/llamarig:/usr/sbin/nologin|llama|llama||"],
    ["cat /etc/group", "root:x:0:\nllama:x:999:"],
    ["uname -s", "Linux"],
    ["dpkg -l", "ii  build-essential 12.9 amd64 x\nii  cmake 3.25 amd64 x\nii  git 2.39 amd64 x\n"
                "ii  ccache 4.8 amd64 x\nii  python3-venv 3.11 amd64 x"],
]

INVENTORY = """\
import sys
sys.path.insert(0, {root!r})
from tests.deploy import fakerig
fakerig.install()

rigs = {rigs!r}
"""


def rig_data(hub_url: str, **overrides) -> dict:
    data = {"fake_delay": 0, "fake_delay_jitter": 0,
            "gpus": [], "build_git_url": "git://127.0.0.1:1/llama.cpp", "build_ref": COMMIT,
            "hub_endpoint": hub_url, "hub_token_env": None,
            "models": {"tiny": {"repo": "acme/tiny-GGUF", "file": "tiny.gguf"}},
            "services": [{"name": "chat", "model": "tiny", "port": 8080, "ctx_size": 2048}]}
    data.update(overrides)
    return data


@dataclass
class Run:
    returncode: int
    output: str
    log: list[dict] = field(default_factory=list)

    def commands(self, host: str | None = None) -> list[str]:
        return [e["run"] for e in self.log if "run" in e and (host is None or e["host"] == host)]

    def puts(self, host: str | None = None) -> dict[str, str]:
        return {e["put"]: e["content"] for e in self.log if "put" in e and (host is None or e["host"] == host)}

    def ran(self, needle: str, host: str | None = None) -> list[str]:
        return [c for c in self.commands(host) if needle in c]


class FakeRigs:
    def __init__(self, tmp_path: Path, hub: FakeHub):
        self.dir, self.hub = tmp_path, hub
        self.rigs: list[tuple[str, dict]] = [("@fake/rig1", rig_data(hub.url))]
        self.scenario: dict = {"responses": [], "files": {}}

    def deploy(self, *args: str, env: dict | None = None) -> Run:
        inventory = self.dir / "inventory.py"
        inventory.write_text(INVENTORY.format(root=str(ROOT), rigs=self.rigs))
        scenario, log = self.dir / "scenario.json", self.dir / "log.jsonl"
        scenario.write_text(json.dumps({**self.scenario,
                                        "responses": self.scenario["responses"] + BASE_RESPONSES}))
        log.write_text("")
        full_env = dict(os.environ, LLAMARIG_FAKE_RIG=str(scenario), LLAMARIG_FAKE_LOG=str(log),
                        XDG_CACHE_HOME=str(self.dir / "cache"), **(env or {}))
        full_env.pop("LLAMARIG_LOCK", None)
        full_env.pop("HF_TOKEN", None)
        p = subprocess.run([str(PYINFRA), "-y", *args, str(inventory), "deploy.py"], cwd=ROOT, env=full_env,
                           capture_output=True, text=True, timeout=300)
        entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return Run(p.returncode, p.stdout + p.stderr, entries)


@pytest.fixture
def fake_rigs(tmp_path):
    hub_root = tmp_path / "hub"
    (hub_root / "acme" / "tiny-GGUF" / "main").mkdir(parents=True)
    (hub_root / "acme" / "tiny-GGUF" / "main" / "tiny.gguf").write_bytes(MODEL_BYTES)
    with FakeHub(hub_root) as hub:
        yield FakeRigs(tmp_path, hub)
