"""rig_programs/llamarig-build.sh, run under POSIX sh against a local git repository, with a stand-in cmake
that configures by writing BUILD/args and builds by creating BUILD/bin/TARGET (or fails when told to)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.rig_programs.helpers import env_with_path, program, stand_in

SCRIPT = program("llamarig-build.sh")
RECORD_NAME = ".test-build.json"  # not the controller's name: the script must use the one it is given
TARGETS = "llama-server llama-bench"

CMAKE = r"""#!/bin/sh
printf '%s\n' "$*" >> "$FAKE_CMAKE_LOG"
if [ "$1" = "-S" ]; then
    b=$4
    shift 4
    mkdir -p "$b"
    : > "$b/args"
    for a in "$@"; do printf '%s\n' "$a" >> "$b/args"; done
    exit 0
fi
if [ "$1" = "--build" ]; then
    b=$2
    if [ -n "${FAKE_CMAKE_WATCH:-}" ]; then
        if [ -e "$FAKE_CMAKE_WATCH" ]; then echo present; else echo absent; fi >> "$b/watch"
    fi
    if [ -n "${FAKE_CMAKE_FAIL:-}" ]; then
        i=0
        while [ $i -lt 100 ]; do echo "[$i%] Building CXX object"; i=$((i + 1)); done
        echo "error: $FAKE_CMAKE_FAIL"
        exit 2
    fi
    while [ $# -gt 0 ] && [ "$1" != "--target" ]; do shift; done
    shift
    if [ "$1" = help ]; then
        printf 'The following are some of the valid targets for this Makefile:\n... all\n... llama-server\n... ggml-rpc-server\n'
        exit 0
    fi
    mkdir -p "$b/bin"
    for t in "$@"; do
        printf '#!/bin/sh\necho %s\n' "$t" > "$b/bin/$t"
        chmod +x "$b/bin/$t"
    done
    exit 0
fi
echo "fake cmake: unexpected $*" >&2
exit 3
"""


def git(*args, cwd=None) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com", GIT_CONFIG_NOSYSTEM="1")
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture
def upstream(tmp_path):
    """A local repository with two commits; (path, first commit, second commit)."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "CMakeLists.txt").write_text("project(fake)\n")
    git("add", "CMakeLists.txt", cwd=repo)
    git("commit", "-q", "-m", "one", cwd=repo)
    first = git("rev-parse", "HEAD", cwd=repo)
    (repo / "VERSION").write_text("2\n")
    git("add", "VERSION", cwd=repo)
    git("commit", "-q", "-m", "two", cwd=repo)
    return repo, first, git("rev-parse", "HEAD", cwd=repo)


class Build:
    def __init__(self, root: Path, upstream):
        self.root = root
        self.url, self.first, self.second = upstream
        self.bin = root / "bin"
        stand_in(self.bin, "cmake", CMAKE)
        self.cmake_log = root / "cmake.log"
        self.src = root / "src" / "llama.cpp"
        self.work = root / "work" / self.first[:12]
        self.builddir = root / "build" / self.first[:12]
        self.prefix = root / "prefix" / self.first[:12]

    def run(self, commit=None, record="{}", cmake_args=(), jobs="3", **env) -> subprocess.CompletedProcess:
        words = [str(self.src), str(self.url), commit or self.first, str(self.work), str(self.builddir),
                 str(self.prefix), jobs, TARGETS, RECORD_NAME, record, "--", *cmake_args]
        environ = env_with_path(self.bin, FAKE_CMAKE_LOG=str(self.cmake_log), **env)
        environ.pop("CCACHE_DIR", None)
        environ.update(env)
        return subprocess.run(["sh", str(SCRIPT), *words], capture_output=True, text=True, env=environ, timeout=120)

    def cmake_calls(self) -> list[str]:
        return self.cmake_log.read_text().splitlines() if self.cmake_log.exists() else []


@pytest.fixture
def build(tmp_path, upstream):
    return Build(tmp_path / "rig", upstream)


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_build_installs_its_prefix_only_when_complete(build):
    cmake_args = ['-DGGML_CUDA=ON', '-DCMAKE_CUDA_ARCHITECTURES=86;89', '-DLLAMA_X="quoted value"',
                  "-DLLAMA_Y='single' and \\back$lash `tick`"]
    record = json.dumps({"commit": build.first, "url": str(build.url), "targets": TARGETS,
                         "cmake_args": cmake_args}, indent=1)
    r = build.run(record=record, cmake_args=cmake_args, FAKE_CMAKE_WATCH=str(build.prefix),
                  CCACHE_DIR=str(build.root / "ccache"))
    assert r.returncode == 0, r.stderr
    assert (build.builddir / "watch").read_text() == "absent\n"  # not there while it was building
    assert sorted(p.name for p in (build.prefix / "bin").iterdir()) == sorted(TARGETS.split())
    assert all(os.access(build.prefix / "bin" / t, os.X_OK) for t in TARGETS.split())
    assert (build.prefix / RECORD_NAME).read_text() == record + "\n"  # verbatim, quotes and all
    assert json.loads((build.prefix / RECORD_NAME).read_text())["cmake_args"] == cmake_args
    assert not (build.prefix / ".llamarig-build.json").exists()
    assert not Path(f"{build.prefix}.tmp").exists()
    # cmake got every argument as one word each, untouched.
    assert (build.builddir / "args").read_text().splitlines() == cmake_args
    calls = build.cmake_calls()
    assert calls[0].startswith(f"-S {build.work} -B {build.builddir} ")
    assert calls[1] == f"--build {build.builddir} --config Release -j 3 --target {TARGETS}"
    # The worktree is at the commit asked for, not the repository's HEAD.
    assert git("-C", str(build.work), "rev-parse", "HEAD") == build.first != build.second
    assert not (build.work / "VERSION").exists()
    assert "installed" in r.stderr
    assert (build.root / "ccache" / f".llamarig-{build.prefix.name}.lock").exists()


def test_a_complete_prefix_is_left_alone(build):
    (build.prefix / "bin").mkdir(parents=True)
    (build.prefix / RECORD_NAME).write_text('{"earlier": true}\n')
    before = tree(build.prefix)
    r = build.run(record='{"later": true}')
    assert r.returncode == 0, r.stderr
    assert "already complete" in r.stderr
    assert build.cmake_calls() == []  # cmake never called
    assert not build.src.exists()  # not even cloned
    assert tree(build.prefix) == before


def test_a_prefix_without_its_record_is_built(build):
    (build.prefix.parent).mkdir(parents=True)
    (build.prefix.parent / f"{build.prefix.name}.tmp").mkdir()  # a cut-off earlier attempt
    (build.prefix.parent / f"{build.prefix.name}.tmp" / "junk").write_text("x")
    r = build.run(record='{"n": 1}')
    assert r.returncode == 0, r.stderr
    assert (build.prefix / RECORD_NAME).read_text() == '{"n": 1}\n'
    assert not (build.prefix / "junk").exists()
    assert len(build.cmake_calls()) == 2


def test_a_failed_build_leaves_no_prefix_and_earlier_ones_as_they_were(build):
    earlier = build.prefix.parent / "0123456789ab"
    (earlier / "bin").mkdir(parents=True)
    (earlier / "bin" / "llama-server").write_text("#!/bin/sh\necho old\n")
    (earlier / RECORD_NAME).write_text('{"commit": "0123456789ab"}\n')
    before = tree(earlier)
    r = build.run(record='{"n": 1}', FAKE_CMAKE_FAIL="ggml-cuda.cu: no kernel image")
    assert r.returncode != 0
    assert "error: ggml-cuda.cu: no kernel image" in r.stderr  # the build log's tail
    assert "[99%] Building CXX object" in r.stderr and "[10%] Building" not in r.stderr  # the tail only
    assert not build.prefix.exists() and not Path(f"{build.prefix}.tmp").exists()
    assert sorted(p.name for p in build.prefix.parent.iterdir()) == ["0123456789ab"]
    assert tree(earlier) == before


def test_a_commit_that_is_not_in_the_clone_yet_is_fetched(build):
    assert build.run(record="{}").returncode == 0  # clones when the upstream had both commits
    (build.url / "THREE").write_text("3\n")
    git("add", "THREE", cwd=build.url)
    git("commit", "-q", "-m", "three", cwd=build.url)
    third = git("rev-parse", "HEAD", cwd=build.url)
    build.work = build.root / "work" / third[:12]
    build.builddir = build.root / "build" / third[:12]
    build.prefix = build.root / "prefix" / third[:12]
    r = build.run(commit=third, record='{"third": true}')
    assert r.returncode == 0, r.stderr
    assert git("-C", str(build.work), "rev-parse", "HEAD") == third
    assert (build.prefix / RECORD_NAME).read_text() == '{"third": true}\n'


def test_too_few_arguments_is_a_usage_error(build):
    r = subprocess.run(["sh", str(SCRIPT), "a", "b", "c"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "usage" in r.stderr
    assert build.cmake_calls() == []


def test_a_target_with_two_names_is_built_by_the_one_the_tree_has_and_installed_by_the_first(build):
    targets = "llama-server rpc-server|ggml-rpc-server"
    r = subprocess.run(["sh", str(SCRIPT), str(build.src), str(build.url), build.first, str(build.work),
                        str(build.builddir), str(build.prefix), "2", targets, RECORD_NAME, "{}", "--"],
                       capture_output=True, text=True, env=env_with_path(build.bin, FAKE_CMAKE_LOG=str(build.cmake_log)))
    assert r.returncode == 0, r.stderr
    assert f"--build {build.builddir} --config Release -j 2 --target llama-server ggml-rpc-server" in build.cmake_calls()
    assert sorted(p.name for p in (build.prefix / "bin").iterdir()) == ["llama-server", "rpc-server"]
    assert (build.prefix / "bin" / "rpc-server").read_text().strip().endswith("ggml-rpc-server")
