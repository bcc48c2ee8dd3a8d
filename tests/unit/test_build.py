from llamarig.release.build import build_plan, cmake_args, cuda_architectures
from llamarig.lookups.gitref import GitRefError, resolve_ref
from llamarig.hostdata.validate import validate_host

import pytest

from .helpers import rig

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def doc(**kw):
    d, problems = validate_host("r", rig(**kw))
    assert problems == []
    return d


def test_auto_architectures_come_from_compute_capability():
    assert cuda_architectures("auto", ["8.6", "8.6", "8.9"]) == ["86", "89"]
    assert cuda_architectures([86, "90a"], ["8.6"]) == ["86", "90a"]
    assert cuda_architectures("auto", []) == []


def test_cuda_build_options():
    args = cmake_args(doc(build_cmake_options=["-DGGML_CUDA_FA_ALL_QUANTS=ON"]), cuda=True, archs=["86"])
    assert args[-3:] == ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=86", "-DGGML_CUDA_FA_ALL_QUANTS=ON"]
    assert "-DBUILD_SHARED_LIBS=OFF" in args


def test_build_key_names_commit_and_options_but_not_ccache():
    cpu = build_plan(doc(), COMMIT, cuda=False, archs=[])
    cuda = build_plan(doc(), COMMIT, cuda=True, archs=["86"])
    no_ccache = build_plan(doc(build_ccache_dir=None), COMMIT, cuda=False, archs=[])
    other = build_plan(doc(), "f" * 40, cuda=False, archs=[])
    assert cpu["key"].startswith("llama.cpp-0123456789ab-")
    assert cpu["prefix"] == f"/opt/llamarig/builds/{cpu['key']}"
    assert len({cpu["key"], cuda["key"], other["key"]}) == 3
    assert no_ccache["key"] == cpu["key"]
    assert "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache" in cpu["cmake_args"]
    assert "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache" not in no_ccache["cmake_args"]


def test_refs_resolve_through_git(tmp_path):
    import subprocess
    repo = tmp_path / "r"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "commit", "-q", "--allow-empty", "-m", "one"], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "tag", "-a", "v1", "-m", "v1"], check=True, env=env)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert resolve_ref(str(repo), "main") == head
    assert resolve_ref(str(repo), "v1") == head  # an annotated tag resolves to its commit, not the tag object
    assert resolve_ref(str(repo), COMMIT) == COMMIT
    with pytest.raises(GitRefError, match="no such branch or tag"):
        resolve_ref(str(repo), "nope")
    with pytest.raises(GitRefError, match="abbreviated"):
        resolve_ref(str(repo), head[:10])
