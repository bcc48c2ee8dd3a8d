"""rig_programs/llamarig-fetch-model.py, the rig's downloader, run here against the fake Hub with the real
huggingface_hub: verified files, a flipped byte, too little disk, a cut-off download, a new revision; and its
--state mode (what a revision directory holds, for the controller), which needs no Hub and no huggingface_hub."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.fakehub import FakeHub
from testbed.hubrepo import GEMMA_REPO, populate_hub
from tests.rig_programs.helpers import program

SCRIPT = program("llamarig-fetch-model.py")
# Not the controller's name, so a test fails if the downloader still used a constant of its own.
MANIFEST = ".test-manifest.json"
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


def fetch(hub, dest: Path, revision="main", free: int | None = None, files: dict | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HOME=str(dest.parent.parent / "hf-home"))
    env.pop("HF_TOKEN", None)
    if free is not None:
        env["FAKE_FREE_BYTES"] = str(free)
    commit = hub.commit_of(GEMMA_REPO, revision)
    return subprocess.run([sys.executable, "-c", RUNNER, str(SCRIPT), "--repo", GEMMA_REPO, "--commit", commit,
                           "--dest", str(dest), "--files", json.dumps(files or files_of(hub, revision)),
                           "--manifest", MANIFEST],
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
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["files"] == want and sorted(manifest["identity"]) == sorted(want)
    assert not (dest / ".llamarig-manifest.json").exists()

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
    assert "Traceback" not in r.stderr and f"llamarig: {want[2]}: the download failed (" in r.stderr, r.stderr[-2000:]
    assert "2 file(s) verified so far are kept, the next run fetches the rest" in r.stderr
    assert sorted(json.loads((dest / MANIFEST).read_text())["files"]) == want[:2]
    assert not (dest / want[2]).exists()  # never a partial file in place
    hub.clear_requests()
    r = fetch(hub, dest)
    assert r.returncode == 0, r.stderr[-3000:]
    assert gets(hub) == [want[2].rsplit("/", 1)[1]]


# --- --state DIR --manifest NAME -------------------------------------------------------------

# The source run inline the way the controller sends it (python3 -c "$SOURCE"), with huggingface_hub made
# unimportable: the --state mode must need the standard library only.
NO_HUB = """\
import sys
import time
sys.modules["huggingface_hub"] = None
source = sys.argv.pop(1)
exec(compile(source, "<llamarig-fetch-model>", "exec"), {"__name__": "__main__"})
"""


def state(directory: Path, manifest: str = MANIFEST, runner: str = NO_HUB) -> dict:
    source = SCRIPT.read_text()
    words = ["--state", str(directory), "--manifest", manifest]
    cmd = [sys.executable, "-c", runner, source, *words] if runner else [sys.executable, "-c", source, *words]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0])


def test_state_lists_every_file_with_the_downloaders_identity(tmp_path):
    rev = tmp_path / "models" / "gemma" / "0123456789ab"
    (rev / "Q4_K_M").mkdir(parents=True)
    (rev / "Q4_K_M" / "a.gguf").write_bytes(b"a" * 1000)
    (rev / "b.gguf").write_bytes(b"bb")
    (rev / ".staging" / "Q4_K_M").mkdir(parents=True)
    (rev / ".staging" / "Q4_K_M" / "a.gguf").write_bytes(b"partial")  # a download under way: not in place
    os.link(rev / "b.gguf", rev / "b-link.gguf")  # a hard link is a regular file too
    os.symlink(rev / "b.gguf", rev / "symlink.gguf")  # not a regular file
    manifest = {"repo": "acme/gemma", "commit": "0123456789ab" * 3, "files": {"b.gguf": {"size": 2}}}
    (rev / MANIFEST).write_text(json.dumps(manifest))

    got = state(rev)
    files = ["Q4_K_M/a.gguf", "b.gguf", "b-link.gguf", MANIFEST]
    assert got["manifest"] == manifest
    assert sorted(got["sizes"]) == sorted(files) == sorted(got["identity"])
    for rel in files:
        st = os.stat(rev / rel)
        assert got["sizes"][rel] == st.st_size
        assert got["identity"][rel] == [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    assert got["sizes"]["Q4_K_M/a.gguf"] == 1000

    # The very function the downloader records identities with (so the two can never disagree).
    assert "identity(path)" in SCRIPT.read_text().split("def state(", 1)[1].split("\ndef ", 1)[0]

    # Inline without the huggingface_hub blocker too: plain python3 -c "$SOURCE" --state ...
    assert state(rev, runner="") == got


def test_state_of_a_missing_directory_and_a_bad_manifest(tmp_path):
    assert state(tmp_path / "nowhere") == {"manifest": None, "sizes": {}, "identity": {}}

    rev = tmp_path / "rev"
    rev.mkdir()
    (rev / "x.gguf").write_bytes(b"x")
    (rev / MANIFEST).write_text("{not json")
    got = state(rev)
    assert got["manifest"] is None and sorted(got["sizes"]) == [MANIFEST, "x.gguf"]

    (rev / MANIFEST).write_text("[1, 2]")  # JSON, but not a manifest
    assert state(rev)["manifest"] is None


def test_state_reads_the_manifest_it_is_told(tmp_path):
    rev = tmp_path / "rev"
    rev.mkdir()
    (rev / ".llamarig-manifest.json").write_text(json.dumps({"repo": "old/name"}))
    (rev / MANIFEST).write_text(json.dumps({"repo": "new/name"}))
    assert state(rev)["manifest"] == {"repo": "new/name"}
    assert state(rev, manifest=".llamarig-manifest.json")["manifest"] == {"repo": "old/name"}
    assert state(rev, manifest=".absent.json")["manifest"] is None


def test_manifest_is_required_and_a_plain_name(tmp_path):
    base = [sys.executable, str(SCRIPT), "--state", str(tmp_path)]
    r = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--manifest" in r.stderr
    r = subprocess.run(base + ["--manifest", "../elsewhere.json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "file name" in r.stderr
    r = subprocess.run([sys.executable, str(SCRIPT), "--manifest", MANIFEST, "--repo", "a/b"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--commit" in r.stderr and "--dest" in r.stderr


def test_a_download_whose_sha256_differs_from_the_hubs_is_refused_and_not_put_in_place(hub, tmp_path):
    """The Hub's client checks sizes only: the downloader hashes every fetched file itself."""
    dest = tmp_path / "models" / "gemma" / "rev1"
    want = files_of(hub)
    bad = sorted(want)[0]
    want[bad] = dict(want[bad], sha256="0" * 64)
    r = fetch(hub, dest, files=want)
    assert r.returncode != 0
    assert f"{bad}: sha256 " in r.stderr and "does not match the Hub's " + "0" * 64 in r.stderr
    assert not (dest / bad).exists()
    manifest = json.loads((dest / MANIFEST).read_text())
    assert bad not in manifest["files"]


def test_a_download_says_how_far_it_is_every_few_seconds(tmp_path, monkeypatch, capsys):
    """The progress line of a file being fetched: its bytes of its size, the rate, the time left and the
    whole download's bytes, read from the .incomplete file huggingface_hub writes (and resumes from)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("fetch_model", program("llamarig-fetch-model.py"))
    fetch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fetch)
    part = tmp_path / ".cache" / "huggingface" / "download" / "Q4" / "abc.etag.incomplete"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (3 << 20))                    # 3 MiB kept from a cut-off run
    monkeypatch.setenv("LLAMARIG_PROGRESS_S", "1")
    p = fetch.Progress(str(tmp_path), "Q4/a.gguf", 10 << 20, 5 << 20, 40 << 20)
    assert p.kept == 3 << 20
    p.start()
    time.sleep(0.5)
    with part.open("ab") as f:
        f.write(b"x" * (2 << 20))
    time.sleep(1.2)
    p.stop.set()
    p.join(5)
    lines = capsys.readouterr().out.splitlines()
    assert lines and lines[0].startswith("fetching Q4/a.gguf: 5.0 MiB of 10.0 MiB (50%), "), lines
    assert " MB/s, " in lines[0] and " s left; all files: 10.0 MiB of 40.0 MiB" in lines[0], lines
