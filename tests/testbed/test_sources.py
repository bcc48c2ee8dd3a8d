import json
import os
import subprocess

import pytest

from testbed import sources
from testbed.hubrepo import GEMMA_REPO, populate_hub


def test_gemma_gguf_and_split_are_faithful():
    src = sources.ensure_gemma_gguf()
    parts = sources.ensure_gemma_split(3)
    assert [p.name for p in parts] == [f"gemma-3-270m-Q4_K_M-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    sources.verify_split(src, parts)   # tensors byte-equal, KVs, split.* types
    assert sources.ensure_gemma_split(3) == parts  # cached, idempotent


def test_populate_hub_hard_links(tmp_path):
    rev = populate_hub(tmp_path)
    parts = sources.ensure_gemma_split(3)
    for p in parts:
        linked = rev / "Q4_K_M" / p.name
        assert os.path.samefile(linked, p)
    assert (rev / "README.md").exists()
    populate_hub(tmp_path)  # idempotent
    assert rev == tmp_path / GEMMA_REPO / "main"


def test_llama_repo_served_by_git_daemon(tmp_path):
    path, tag, commit = sources.ensure_llama_cpp_repo()
    assert tag == "b0.3.36" and len(commit) == 40
    info = json.loads((path / "testbed-complete.json").read_text())
    assert info["commit"] == commit
    with sources.GitServer(path.parent) as gs:
        assert gs.url.startswith("git://127.0.0.1:")
        out = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", tag, gs.url + path.name, str(out)],
                       check=True, env=dict(os.environ, GIT_CONFIG_NOSYSTEM="1"))
        head = subprocess.run(["git", "-C", str(out), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert head == commit
        ls = subprocess.run(["git", "ls-remote", gs.url + path.name], capture_output=True, text=True,
                            check=True).stdout
        assert f"{commit}\trefs/heads/master" in ls and "refs/tags/b0.3.36^{}" in ls
    assert (out / "CMakeLists.txt").exists() and (out / "tools/server").is_dir()
    assert (out / "cmake/build-info.cmake").exists()
    assert gs.proc is None


def test_llama_repo_commit_is_deterministic(tmp_path, monkeypatch):
    from testbed.common import cache_dir
    real = cache_dir()
    _, _, commit = sources.ensure_llama_cpp_repo()
    (tmp_path / "dl").mkdir()
    os.symlink(real / "dl" / sources.LLAMA_SDIST, tmp_path / "dl" / sources.LLAMA_SDIST)
    monkeypatch.setenv("LLAMARIG_TESTBED_CACHE", str(tmp_path))
    _, _, again = sources.ensure_llama_cpp_repo()
    assert again == commit


def test_ik_repo_has_its_tag_and_the_build_info_generator(tmp_path):
    path, tag, commit = sources.ensure_ik_llama_cpp_repo()
    assert tag == "ik-0.1.5" and len(commit) == 40
    ls = subprocess.run(["git", "--git-dir", str(path), "ls-tree", "-r", "--name-only", tag],
                        capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in ("common/cmake/build-info-gen-cpp.cmake", "common/build-info.cpp.in", "cmake/build-info.cmake",
                "examples/server/server.cpp", "examples/sweep-bench/CMakeLists.txt"):
        assert rel in ls, rel
    peeled = subprocess.run(["git", "--git-dir", str(path), "rev-parse", f"{tag}^{{commit}}"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert peeled == commit


@pytest.mark.slow
def test_ik_repo_generates_its_build_info(tmp_path):
    """The added generator works where ik's build runs it: cmake -P in the source root."""
    path, tag, _ = sources.ensure_ik_llama_cpp_repo()
    src = tmp_path / "ik"
    subprocess.run(["git", "clone", "-q", "--branch", tag, str(path), str(src)], check=True)
    subprocess.run(["cmake", "-DCMAKE_C_COMPILER=cc", "-DCMAKE_C_COMPILER_ID=GNU", "-DCMAKE_C_COMPILER_VERSION=12",
                    "-P", "common/cmake/build-info-gen-cpp.cmake"], cwd=src, check=True, capture_output=True)
    text = (src / "common" / "build-info.cpp").read_text()
    assert "LLAMA_BUILD_NUMBER" in text and "LLAMA_COMMIT" in text


def test_ik_repo_served_by_git_daemon(tmp_path):
    path, tag, commit = sources.ensure_ik_llama_cpp_repo()
    assert path.parent == sources.llama_repo_path().parent and path.name == "ik_llama.cpp.git"
    assert sources.ensure_ik_llama_cpp_repo() == (path, tag, commit)  # cached, idempotent
    with sources.GitServer(path.parent) as gs:
        ls = subprocess.run(["git", "ls-remote", gs.url + path.name], capture_output=True, text=True,
                            check=True).stdout
        assert f"{commit}\trefs/heads/main" in ls and f"{commit}\trefs/tags/{tag}^{{}}" in ls
        out = tmp_path / "clone"
        subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", tag, gs.url + path.name, str(out)],
                       check=True, env=dict(os.environ, GIT_CONFIG_NOSYSTEM="1"))
    assert (out / "common/cmake/build-info-gen-cpp.cmake").is_file()
    assert (out / "examples/server").is_dir() and (out / "examples/sweep-bench").is_dir()


@pytest.mark.slow
def test_ik_repo_configures_and_builds_build_info(tmp_path):
    """ik's own build runs the added generator: configure, then only the build_info target."""
    path, tag, commit = sources.ensure_ik_llama_cpp_repo()
    src = tmp_path / "ik"
    subprocess.run(["git", "clone", "-q", "--branch", tag, str(path), str(src)], check=True)
    subprocess.run(["cmake", "-S", ".", "-B", "build", "-DGGML_IQK_FA_ALL_QUANTS=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                    "-DBUILD_SHARED_LIBS=OFF"], cwd=src, check=True, capture_output=True)
    subprocess.run(["cmake", "--build", "build", "--target", "build_info", "-j2"], cwd=src, check=True,
                   capture_output=True)
    text = (src / "common" / "build-info.cpp").read_text()
    assert f'LLAMA_COMMIT = "{commit[:7]}"' in text
    assert list((src / "build" / "common").rglob("build-info.cpp.o"))


def _src_tree(sdist_name: str, requirement: str, prefix: str, dest):
    """The fork's src/ (llama-arch.cpp, llama-model.cpp, models/) out of its sdist."""
    import tarfile
    with tarfile.open(sources._ensure_sdist(sdist_name, requirement)) as tf:
        members = [m for m in tf.getmembers() if m.name.startswith(prefix + "src/") and m.isfile()]
        tf.extractall(dest, members=members, filter="data")
    return dest / prefix


def test_the_planners_architecture_lists_are_read_from_the_pinned_trees(tmp_path):
    """llamarig/planner/architectures.json is what the pinned sources say (regenerate it with
    python -m llamarig.planner.architectures --write when a pin moves)."""
    from llamarig.planner import architectures
    data = json.loads(architectures.DATA.read_text())
    main = _src_tree(sources.LLAMA_SDIST, "llama-cpp-python==0.3.36", "llama_cpp_python-0.3.36/vendor/llama.cpp/",
                     tmp_path)
    ik = _src_tree(sources.IK_SDIST, "ik-llama-cpp-python==0.1.5", "ik_llama_cpp_python-0.1.5/vendor/ik_llama.cpp/",
                   tmp_path)
    assert architectures.read_tree(main) == data["llama.cpp"]["architectures"]
    assert architectures.read_tree(ik) == data["ik_llama.cpp"]["architectures"]
    assert architectures.read_swa_patterns(main, architectures._names(main)) == data["llama.cpp"]["swa_patterns"]
