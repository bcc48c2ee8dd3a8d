import hashlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testbed.fakehub import FakeHub

REPO = "acme/tiny-GGUF"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    main = root / REPO / "main"
    (main / "Q4_K_M").mkdir(parents=True)
    (main / "README.md").write_text("# tiny\n")
    data = os.urandom(3 * 1024 * 1024 + 123)
    (main / "Q4_K_M" / "tiny-Q4_K_M-00001-of-00002.gguf").write_bytes(data)
    (main / "Q4_K_M" / "tiny-Q4_K_M-00002-of-00002.gguf").write_bytes(data[::-1])
    (main / "BIG").mkdir()
    (main / "BIG" / "big.gguf").write_bytes(os.urandom(1 << 20) * 24)  # > 2 download chunks
    (main / "Q8_0").mkdir()
    (main / "Q8_0" / "tiny-Q8_0.gguf").write_bytes(os.urandom(50_000))
    v2 = root / REPO / "v2"
    (v2 / "Q4_K_M").mkdir(parents=True)
    (v2 / "README.md").write_text("# tiny v2\n")
    (v2 / "Q4_K_M" / "tiny-Q4_K_M.gguf").write_bytes(data)
    return root


@pytest.fixture
def hub(hub_root):
    h = FakeHub(hub_root)
    h.start()
    yield h
    h.stop()


@pytest.fixture
def hf_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


def sha256(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def test_model_info_files_metadata(hub, hub_root, hf_env):
    from huggingface_hub import HfApi
    api = HfApi(endpoint=hub.url)
    info = api.model_info(REPO, files_metadata=True)
    assert len(info.sha) == 40 and info.sha == hub.commit_of(REPO, "main")
    sib = {s.rfilename: s for s in info.siblings}
    assert set(sib) == {"README.md", "BIG/big.gguf", "Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf",
                        "Q4_K_M/tiny-Q4_K_M-00002-of-00002.gguf", "Q8_0/tiny-Q8_0.gguf"}
    g = sib["Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf"]
    f = hub_root / REPO / "main" / g.rfilename
    assert g.size == f.stat().st_size and g.lfs.sha256 == sha256(f) and g.lfs.size == g.size
    assert g.lfs.pointer_size > 100 and len(g.blob_id) == 40
    assert sib["README.md"].lfs is None
    # git blob sha1 of a plain file
    assert sib["README.md"].blob_id == hashlib.sha1(b"blob 7\0# tiny\n").hexdigest()
    # other revisions: by name and by 40-hex commit; deterministic shas
    v2 = api.model_info(REPO, revision="v2")
    assert v2.sha != info.sha and v2.sha == hub.commit_of(REPO, "v2")
    assert api.model_info(REPO, revision=info.sha).sha == info.sha
    assert FakeHub(hub_root).commit_of(REPO, "main") == info.sha


def test_errors(hub, hf_env, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    api = HfApi(endpoint=hub.url)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="nope")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.gguf", endpoint=hub.url, local_dir=tmp_path / "x")
    r = [x for x in hub.requests if x.path.endswith("missing.gguf")][0]
    assert r.method == "HEAD" and r.status == 404


def test_list_repo_tree_and_paths_info(hub, hf_env):
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile, RepoFolder
    api = HfApi(endpoint=hub.url)
    top = list(api.list_repo_tree(REPO))
    assert [(type(e).__name__, e.path) for e in top] == [
        ("RepoFolder", "BIG"), ("RepoFolder", "Q4_K_M"), ("RepoFolder", "Q8_0"), ("RepoFile", "README.md")]
    rec = {e.path: e for e in api.list_repo_tree(REPO, recursive=True)}
    assert "Q4_K_M/tiny-Q4_K_M-00002-of-00002.gguf" in rec and isinstance(rec["Q8_0"], RepoFolder)
    sub = list(api.list_repo_tree(REPO, path_in_repo="Q4_K_M", expand=True))
    assert [e.path for e in sub] == ["Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf",
                                     "Q4_K_M/tiny-Q4_K_M-00002-of-00002.gguf"]
    assert sub[0].lfs.sha256 and sub[0].last_commit is not None
    infos = api.get_paths_info(REPO, ["README.md", "Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf", "nope", "Q8_0"],
                               revision="main")
    assert [type(i).__name__ for i in infos] == ["RepoFile", "RepoFile", "RepoFolder"]
    assert isinstance(infos[1], RepoFile) and infos[1].lfs.sha256 == sub[0].lfs.sha256
    assert {e.path for e in api.list_repo_tree(REPO, revision="v2", recursive=True)} == {
        "Q4_K_M", "Q4_K_M/tiny-Q4_K_M.gguf", "README.md"}


def test_hf_hub_download_headers_and_requests(hub, hub_root, hf_env, tmp_path):
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    name = "Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf"
    meta = get_hf_file_metadata(hf_hub_url(REPO, name, endpoint=hub.url))
    src = hub_root / REPO / "main" / name
    assert meta.etag == sha256(src) and meta.size == src.stat().st_size
    assert meta.commit_hash == hub.commit_of(REPO) and meta.xet_file_data is None
    hub.clear_requests()
    p = hf_hub_download(REPO, name, endpoint=hub.url, local_dir=tmp_path / "dl")
    assert sha256(p) == sha256(src)
    reqs = [(r.method, r.path.split("?")[0]) for r in hub.requests]
    assert reqs == [("HEAD", f"/{REPO}/resolve/main/{name}"), ("GET", f"/{REPO}/resolve/main/{name}")]
    assert not any(r.auth for r in hub.requests)
    # second call: local_dir metadata matches the etag -> HEAD only
    hub.clear_requests()
    hf_hub_download(REPO, name, endpoint=hub.url, local_dir=tmp_path / "dl")
    assert [r.method for r in hub.requests] == ["HEAD"]
    # token -> Authorization header recorded
    hub.clear_requests()
    hf_hub_download(REPO, "README.md", endpoint=hub.url, local_dir=tmp_path / "dl2", token="hf_testbed")
    assert all(r.auth for r in hub.requests)


def test_ranged_get(hub, hub_root):
    name = "Q8_0/tiny-Q8_0.gguf"
    data = (hub_root / REPO / "main" / name).read_bytes()
    url = f"{hub.url}/{REPO}/resolve/main/{name}"
    req = urllib.request.Request(url, headers={"Range": "bytes=100-199"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == data[100:200]
        assert r.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
        assert r.headers["Accept-Ranges"] == "bytes"
        assert r.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
        assert r.headers["X-Linked-Size"] == str(len(data))
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=49990-"})) as r:
        assert r.read() == data[49990:]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": f"bytes={len(data)}-"}))
    assert e.value.code == 416
    e.value.close()
    assert hub.requests[-3].range == "bytes=100-199"


def test_cut_connection_resumes_with_range(hub, hub_root, hf_env, tmp_path):
    """http_get writes in 10 MiB chunks: a cut after 12 MB resumes at 10 MiB."""
    from huggingface_hub import hf_hub_download
    name = "BIG/big.gguf"
    hub.fail_after_bytes(name, 12_000_000)
    hub.clear_requests()
    p = hf_hub_download(REPO, name, endpoint=hub.url, local_dir=tmp_path / "cut")
    assert sha256(p) == sha256(hub_root / REPO / "main" / name)
    gets = [r for r in hub.requests if r.method == "GET"]
    assert len(gets) == 2 and gets[0].status == -1 and gets[0].range is None
    assert gets[1].range == f"bytes={10 * 1024 * 1024}-" and gets[1].status == 206


def test_snapshot_download_subprocess(hub, hub_root, tmp_path):
    code = (
        "import json, sys\n"
        "from huggingface_hub import snapshot_download\n"
        f"p = snapshot_download({REPO!r}, allow_patterns=['Q4_K_M/*'], local_dir=sys.argv[1])\n"
        "print(json.dumps(p))\n")
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "home"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1")
    env.pop("HF_TOKEN", None)
    out = tmp_path / "snap"
    r = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert got == ["Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf", "Q4_K_M/tiny-Q4_K_M-00002-of-00002.gguf"]
    for g in got:
        assert sha256(out / g) == sha256(hub_root / REPO / "main" / g)
    paths = [r.path.split("?")[0] for r in hub.requests]
    assert f"/api/models/{REPO}/revision/main" in paths
    assert f"/api/models/{REPO}/tree/{hub.commit_of(REPO)}" in paths


def test_reset_connection_is_not_retried_by_hf_hub(hub, hf_env, tmp_path):
    """Documents huggingface_hub 2.4: a RST mid-body (httpx ReadError) is not resumed."""
    import httpx2
    from huggingface_hub import hf_hub_download
    name = "Q4_K_M/tiny-Q4_K_M-00001-of-00002.gguf"
    hub.fail_after_bytes(name, 500_000, mode="reset")
    with pytest.raises(httpx2.ReadError):
        hf_hub_download(REPO, name, endpoint=hub.url, local_dir=tmp_path / "rst")
    assert not (tmp_path / "rst" / name).exists()
