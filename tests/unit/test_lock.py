"""rigs.lock: what it records, what it covers, what `llamarig lock [--update]` prints, on a fake Hub and a local git repo."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from llamarig.release import lock
from llamarig.lookups.hub import HubFile, ResolvedModel
from llamarig.hostdata.validate import validate_host
from testbed.fakehub import FakeHub
from testbed.hubrepo import populate_hub
from tests.unit.helpers import ROOT, rig

COMMIT = "a" * 40
MODEL = ResolvedModel("acme/gemma-GGUF", "main", "b" * 40,
                      [HubFile("gemma-00001-of-00002.gguf", 100, "c" * 64), HubFile("gemma-00002-of-00002.gguf", 50, "d" * 64)],
                      "gemma-00001-of-00002.gguf")


def entry(doc=None, model=MODEL, units=None):
    doc = doc or validate_host("r1", rig())[0]
    return lock.rig_entry(doc, COMMIT, True, ["86"], ["-DGGML_CUDA=ON"], "llama.cpp-aaaaaaaaaaaa-0123456789",
                          {"gemma": model}, units or {"llamarig-chat.service": "[Unit]\n"})


def test_the_file_reads_back_what_was_written_and_is_one_key_per_line():
    doc = validate_host("r1", rig())[0]
    doc["models"]["gemma"]["file"] = None  # TOML has no null: an unset file survives the round trip
    rigs = {"r1": entry(doc), "r-2": entry(doc)}
    text = lock.dumps(rigs, "inventory/home.py")
    assert lock.loads(text) == rigs
    assert text == lock.dumps(lock.loads(text), "inventory/home.py")  # stable: a rewrite diffs as nothing
    assert '"gemma-00002-of-00002.gguf"' in text and "sha256 = \"" + "d" * 64 + "\"" in text
    assert all(len(line) < 400 for line in text.splitlines())  # one file per line, not one giant line
    assert tomllib.loads(text)["rigs"]["r-2"]["units"]["llamarig-chat.service"].startswith("sha256:")


def test_a_broken_or_foreign_lock_is_a_clear_error():
    with pytest.raises(lock.LockError, match="not a lock file"):
        lock.loads("[[[", "x/rigs.lock")
    with pytest.raises(lock.LockError, match="version 7"):
        lock.loads("version = 7\n", "x/rigs.lock")
    with pytest.raises(lock.LockError, match="lacks 'build'"):
        lock.loads("version = 1\n[rigs.r1.units]\n", "x/rigs.lock")


@pytest.mark.parametrize("change, key", [
    ({"build_ref": "b9999"}, "build_ref"),
    ({"build_cmake_options": ["-DGGML_CUDA_FA_ALL_QUANTS=ON"]}, "build_cmake_options"),
    ({"build_cuda_architectures": [89]}, "build_cuda_architectures"),
    ({"build_fork": "ik_llama.cpp"}, "build_fork"),
    ({"models": {"gemma": {"repo": "acme/gemma-GGUF", "include": ["*.gguf"], "file": "gemma-00001-of-00003.gguf",
                           "revision": "v2"}}}, "models.gemma.revision"),
    ({"models": {"gemma": {"repo": "acme/gemma-GGUF", "include": ["Q8/*"], "file": "gemma-00001-of-00003.gguf"}}},
     "models.gemma.include"),
    ({"models": {"qwen": {"repo": "acme/qwen-GGUF"}}, "services": [{"name": "chat", "model": "qwen", "port": 8080}]},
     "models.qwen"),
])
def test_data_the_lock_was_not_made_from_is_named(change, key):
    locked = entry()
    doc = validate_host("r1", rig(**change))[0]
    missing = lock.uncovered(locked, doc)
    assert [m.key for m in missing] == [key]
    assert lock.uncovered(locked, validate_host("r1", rig())[0]) == []  # the same data: covered


def test_changes_name_commit_ranges_files_and_units():
    old = {"r1": entry(), "gone": entry()}
    moved = ResolvedModel(MODEL.repo, "main", "e" * 40,
                          [HubFile("gemma-00001-of-00002.gguf", 100, "f" * 64), HubFile("gemma-00003.gguf", 7, "0" * 64)],
                          MODEL.file)
    new_entry = entry(model=moved, units={"llamarig-chat.service": "[Unit]\nchanged\n"})
    new_entry["build"]["commit"] = "9" * 40
    lines = lock.changes(old, {"r1": new_entry, "new": entry()})
    assert lines == [
        "gone: no longer locked",
        "new: locked (build llama.cpp aaaaaaaaaaaa, 1 model(s), 1 unit(s))",
        f"r1: llama.cpp master: {'a' * 12}..{'9' * 12}",
        f"r1: model gemma: acme/gemma-GGUF {'b' * 12}..{'e' * 12}",
        f"r1: model gemma: ~ gemma-00001-of-00002.gguf (sha256 {'c' * 12} -> {'f' * 12})",
        "r1: model gemma: - gemma-00002-of-00002.gguf",
        "r1: model gemma: + gemma-00003.gguf (7 bytes)",
        "r1: unit llamarig-chat.service changed",
    ]
    assert lock.changes(old, old) == []


def git(*args, cwd=None):
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run(["git", *args], check=True, env=env, cwd=cwd, capture_output=True, text=True).stdout.strip()


def test_llamarig_lock_writes_keeps_and_updates(tmp_path):
    """A CPU rig (no SSH needed), a local git repo and the fake Hub with the real gemma split set."""
    repo = tmp_path / "src"
    git("init", "-q", "-b", "master", str(repo))
    git("commit", "-q", "--allow-empty", "-m", "one", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    hub_root = tmp_path / "hub"
    populate_hub(hub_root)
    inv = tmp_path / "inv" / "rigs.py"
    inv.parent.mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    env.pop("HF_TOKEN", None)

    def lock_cli(*args):
        return subprocess.run([sys.executable, "-m", "llamarig", "lock", str(inv), *args], capture_output=True,
                              text=True, env=env, cwd=ROOT)

    with FakeHub(hub_root) as hub:
        def write(temp=0.7, revision="main"):
            data = {"build_git_url": str(repo), "build_ref": "master", "hub_endpoint": hub.url,
                    "models": {"gemma": {"repo": "testbed/gemma-3-270m-GGUF", "include": ["Q4_K_M/*.gguf"],
                                         "revision": revision}},
                    "services": [{"name": "chat", "model": "gemma", "port": 8080, "sampling": {"temp": temp}}]}
            inv.write_text(f"rigs = [('cpu1', {data!r})]\n")

        write()
        r = lock_cli()
        assert r.returncode == 0, r.stderr
        assert f"cpu1: locked (build llama.cpp {first[:12]}, 1 model(s), 1 unit(s))" in r.stdout
        locked = lock.read(inv.parent / "rigs.lock")["cpu1"]
        assert locked["build"]["commit"] == first and locked["build"]["cuda"] is False
        files = {f["path"]: f for f in locked["models"]["gemma"]["files"]}
        hub_dir = hub.repo_dir("testbed/gemma-3-270m-GGUF") / "main"
        assert sorted(files) == sorted(str(p.relative_to(hub_dir)) for p in hub_dir.glob("Q4_K_M/*.gguf"))
        for path, f in files.items():
            assert f["sha256"] == hub.file_info(path, hub_dir / path).sha256 and f["size"] == (hub_dir / path).stat().st_size
        assert locked["models"]["gemma"]["commit"] == hub.commit_of("testbed/gemma-3-270m-GGUF", "main")
        assert sum(1 for r in hub.requests if r.method == "GET" and "/resolve/" in r.path) == 0  # metadata only

        # The data did not change: nothing to do. New commits upstream do not move a lock by themselves.
        git("commit", "-q", "--allow-empty", "-m", "two", cwd=repo)
        second = git("rev-parse", "HEAD", cwd=repo)
        r = lock_cli()
        assert r.returncode == 0 and "is up to date" in r.stdout, r.stdout + r.stderr
        assert lock.read(inv.parent / "rigs.lock")["cpu1"]["build"]["commit"] == first

        # A flag changes: the unit's digest is locked again, the commit and revision stay.
        write(temp=0.2)
        r = lock_cli()
        assert r.returncode == 0 and r.stdout.splitlines()[0] == "cpu1: unit llamarig-chat.service changed", r.stdout
        assert lock.read(inv.parent / "rigs.lock")["cpu1"]["build"]["commit"] == first

        # --update moves refs forward and says from where to where.
        populate_hub(hub_root, revision="main", n_parts=4, note="re-split")  # main moves: four parts, not three
        for old_part in hub_dir.glob("Q4_K_M/*-of-00003.gguf"):
            old_part.unlink()
        r = lock_cli("--update")
        assert r.returncode == 0, r.stderr
        assert f"cpu1: llama.cpp master: {first[:12]}..{second[:12]}" in r.stdout
        assert "cpu1: model gemma: + Q4_K_M/gemma-3-270m-Q4_K_M-00004-of-00004.gguf" in r.stdout, r.stdout
        assert "cpu1: model gemma: - Q4_K_M/gemma-3-270m-Q4_K_M-00003-of-00003.gguf" in r.stdout

        # A broken ref names the rig and leaves the lock as it was.
        before = (inv.parent / "rigs.lock").read_text()
        inv.write_text(inv.read_text().replace("'master'", "'no-such-branch'"))
        r = lock_cli("--update")
        assert r.returncode == 1 and "cpu1: build_ref = 'no-such-branch': expected a ref of" in r.stderr and "Traceback" not in r.stderr
        assert (inv.parent / "rigs.lock").read_text() == before


def test_a_gpu_rig_is_asked_for_nvcc_and_its_cards_compute_capability(monkeypatch):
    """`auto` architectures are read on the rig: they decide the CMake arguments that name the prefix."""
    import contextlib

    from llamarig.commands import lock as lockcli
    from llamarig.lookups import rigfacts
    from llamarig.release.assemble import RigFacts

    answers = {rigfacts.NVCC_LOOKUP: (0, "/usr/local/cuda/bin/nvcc\n", ""),
               rigfacts.COMPUTE_CAPS: (0, "8.6\n8.6\n8.9\n", "")}
    asked = []

    @contextlib.contextmanager
    def fake_ssh(host, data):
        asked.append(host)
        yield lambda command, timeout=30: answers[command]

    monkeypatch.setattr(rigfacts, "ssh_rig", fake_ssh)
    doc = validate_host("r1", rig())[0]
    assert lockcli.build_facts("r1", doc, {}) == RigFacts(True, ("86", "89")) and asked == ["r1"]
    doc["build_cuda_architectures"] = [86]
    assert lockcli.build_facts("r1", doc, {}) == RigFacts(True, ("86",))
    answers[rigfacts.NVCC_LOOKUP] = (0, "", "")
    assert lockcli.build_facts("r1", doc, {}) == RigFacts(False)  # no nvcc: a CPU build, as the deploy would do
    assert lockcli.build_facts("r1", validate_host("r1", rig(gpus=[]))[0], {}) == RigFacts(False)
    assert asked == ["r1"] * 3  # a rig without GPUs is not asked

    @contextlib.contextmanager
    def unreachable(host, data):
        raise OSError("Connection refused")
        yield

    monkeypatch.setattr(rigfacts, "ssh_rig", unreachable)
    with pytest.raises(lockcli.ResolveError, match="r1: could not reach the rig .* OSError: Connection refused"):
        lockcli.build_facts("r1", doc, {})
