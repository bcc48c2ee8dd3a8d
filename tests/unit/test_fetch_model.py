"""templates/llamarig-fetch-model.py, the rig's downloader, run here against the fake Hub with the real
huggingface_hub: verified files, a flipped byte, too little disk, a cut-off download, a new revision."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.fakehub import FakeHub
from testbed.hubrepo import GEMMA_REPO, populate_hub
from tests.unit.helpers import ROOT

SCRIPT = ROOT / "templates" / "llamarig-fetch-model.py"
# Runs the script as the rig would, with os.statvfs reporting FREE bytes when FREE is set.
RUNNER = """\
import os, runpy, sys
free = os.environ.get("FAKE_FREE_BYTES")
if free:
    real = os.statvfs
    class V:
        def __init__(self, p):
            s = real(p)
            self.f_frsize, self.f_bavail = 1, int(free)
    os.statvfs = V
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    populate_hub(root)
    populate_hub(root, revision="v2", note="same files, another commit")
    with FakeHub(root) as h:
        yield h


def files_of(hub, revision="main") -> dict:
    rev = hub.repo_dir(GEMMA_REPO) / revision
    return {str(p.relative_to(rev)): {"size": p.stat().st_size, "sha256": hub.file_info(str(p.relative_to(rev)), p).sha256}
            for p in sorted(rev.glob("Q4_K_M/*.gguf"))}


def fetch(hub, dest: Path, revision="main", free: int | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(dest.parent.parent / "hf-home"))
    env.pop("HF_TOKEN", None)
    if free is not None:
        env["FAKE_FREE_BYTES"] = str(free)
    commit = hub.commit_of(GEMMA_REPO, revision)
    return subprocess.run([sys.executable, "-c", RUNNER, str(SCRIPT), "--repo", GEMMA_REPO, "--commit", commit,
                           "--dest", str(dest), "--files", json.dumps(files_of(hub, revision))],
                          capture_output=True, text=True, env=env, timeout=600)


def gets(hub) -> list[str]:
    return sorted(r.path.rsplit("/", 1)[1] for r in hub.requests if r.method == "GET" and r.path.endswith(".gguf"))


def test_verified_files_flipped_byte_and_a_new_revision(hub, tmp_path):
    dest = tmp_path / "models" / "gemma" / "rev1"
    want = files_of(hub)
    hub.clear_requests()
    r = fetch(hub, dest)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(gets(hub)) == len(want) == 3
    for path, spec in want.items():
        assert sha256(dest / path) == spec["sha256"]
    manifest = json.loads((dest / ".llamarig-manifest.json").read_text())
    assert manifest["files"] == want and sorted(manifest["identity"]) == sorted(want)

    hub.clear_requests()
    r = fetch(hub, dest)  # all verified: nothing fetched, nothing hashed
    assert r.returncode == 0 and gets(hub) == [] and "0 file(s) fetched" in r.stdout, r.stdout + r.stderr

    # One byte flipped in the middle of part 2, size unchanged: found, fetched again, and only that part.
    part2 = dest / sorted(want)[1]
    with open(part2, "r+b") as f:
        f.seek(part2.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    hub.clear_requests()
    r = fetch(hub, dest)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "changed on disk since it was verified" in r.stdout
    assert gets(hub) == [part2.name]
    assert sha256(part2) == want[sorted(want)[1]]["sha256"]

    # Another revision with the same files: hard-linked from the verified one, nothing downloaded.
    hub.clear_requests()
    dest2 = dest.parent / "rev2"
    r = fetch(hub, dest2, revision="v2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert gets(hub) == [] and "3 linked from an earlier revision" in r.stdout, r.stdout
    assert all(os.path.samefile(dest / p, dest2 / p) for p in want)


def test_too_little_disk_fails_before_the_first_byte(hub, tmp_path):
    dest = tmp_path / "models" / "gemma" / "rev1"
    need = sum(f["size"] for f in files_of(hub).values())
    hub.clear_requests()
    r = fetch(hub, dest, free=need // 2)
    assert r.returncode != 0
    assert f"{need / 2**30:.2f} GiB left to download, but only {need / 2 / 2**30:.2f} GiB free under {dest}" in r.stderr
    assert "nothing was downloaded" in r.stderr and "Traceback" not in r.stderr
    assert gets(hub) == []
    assert not any(dest.glob("Q4_K_M/*"))


def test_a_cut_off_download_keeps_what_finished(hub, tmp_path):
    dest = tmp_path / "models" / "gemma" / "rev1"
    want = sorted(files_of(hub))
    hub.fail_after_bytes(want[2], 2_000_000, times=5, mode="reset")
    try:
        r = fetch(hub, dest)
    finally:
        hub.clear_faults()
    assert r.returncode != 0
    assert sorted(json.loads((dest / ".llamarig-manifest.json").read_text())["files"]) == want[:2]
    assert not (dest / want[2]).exists()  # never a partial file in place
    hub.clear_requests()
    r = fetch(hub, dest)
    assert r.returncode == 0, r.stderr[-3000:]
    assert gets(hub) == [want[2].rsplit("/", 1)[1]]
