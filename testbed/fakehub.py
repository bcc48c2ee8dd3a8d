"""A loopback fake of the Hugging Face Hub, enough for huggingface_hub 2.4 downloads.

Layout on disk: ``root_dir/<owner>/<repo>/<revision-name>/<files...>``; every
revision directory is one commit whose sha is deterministic (sha1 over repo id,
revision name and the sorted (path, size) list).  A 40-hex revision resolves to the
revision whose commit it is.

Files are served without xet headers (no ``X-Xet-Hash``), so huggingface_hub takes
the plain HTTP path (HEAD on /resolve, then GET with Range on retries).  LFS files
(.gguf/.safetensors/.bin or >= 10 MiB) are described the way the Hub does: ETag and
X-Linked-Etag = the quoted sha256, X-Linked-Size, and in the API an ``lfs`` object
with sha256/size/pointerSize and a blob id that is the git sha1 of the pointer file.
"""
from __future__ import annotations

import email.utils
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pt", ".pth", ".onnx")
LFS_MIN_SIZE = 10 * 1024 * 1024
HEX40 = re.compile(r"^[0-9a-f]{40}$")
FIXED_DATE = "2025-01-01T00:00:00.000Z"


@dataclass
class FileInfo:
    path: str          # path in repo
    abs: Path
    size: int
    is_lfs: bool
    sha256: str | None = None       # lfs only
    blob_id: str = ""               # git blob sha1 (of the pointer for lfs)
    pointer_size: int | None = None

    def etag(self) -> str:
        return '"%s"' % (self.sha256 if self.is_lfs else self.blob_id)


@dataclass
class Revision:
    repo_id: str
    name: str
    dir: Path
    commit: str
    files: dict[str, Path] = field(default_factory=dict)   # repo path -> abs path


@dataclass
class Request:
    method: str
    path: str          # path + query as sent
    range: str | None
    auth: bool
    status: int = 0
    headers: dict = field(default_factory=dict)


def _git_blob_sha1(data_len: int, chunks) -> str:
    h = hashlib.sha1(b"blob %d\0" % data_len)
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def _iter_file(p: Path, bs: int = 1 << 20):
    with open(p, "rb") as f:
        while True:
            b = f.read(bs)
            if not b:
                return
            yield b


class FakeHub:
    def __init__(self, root_dir: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.root = Path(root_dir)
        self.host, self.port = host, port
        self.requests: list[Request] = []
        self._faults: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._info_cache: dict[tuple, FileInfo] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.rate_limit: int | None = None   # bytes/s per response body, None = unlimited
        self.url: str | None = None

    # ----------------------------------------------------------- control
    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            pass
        Handler.hub = hub
        self._httpd = ThreadingHTTPServer((self.host, self.port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fakehub", daemon=True)
        self._thread.start()
        self.url = f"http://{self.host}:{self.port}"
        return self.url

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def fail_after_bytes(self, path: str, n: int, times: int = 1, mode: str = "close") -> None:
        """Cut the connection after `n` body bytes of the next GET of `path`
        ("file/in/repo" or "owner/repo/file/in/repo"), `times` times.

        mode="close": orderly close (FIN) with the body incomplete; httpx raises
        RemoteProtocolError and huggingface_hub's http_get resumes with a Range GET.
        mode="reset": TCP RST; httpx raises ReadError, which huggingface_hub 2.4 does
        NOT retry: the download fails (and its .incomplete file is removed)."""
        if mode not in ("close", "reset"):
            raise ValueError(mode)
        with self._lock:
            self._faults.setdefault(path, []).extend([(n, mode)] * times)

    def clear_faults(self) -> None:
        """Forget every fault not yet taken."""
        with self._lock:
            self._faults.clear()

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def requests_for(self, suffix: str, method: str | None = None) -> list[Request]:
        return [r for r in list(self.requests)
                if urlsplit(r.path).path.endswith(suffix) and (method is None or r.method == method)]

    # ----------------------------------------------------------- repo model
    def repo_dir(self, repo_id: str) -> Path:
        return self.root / repo_id

    def revisions(self, repo_id: str) -> dict[str, Revision]:
        d = self.repo_dir(repo_id)
        out: dict[str, Revision] = {}
        if not d.is_dir() or repo_id.count("/") != 1:
            return out
        for rd in sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files: dict[str, Path] = {}
            for dirpath, dirnames, filenames in os.walk(rd):
                dirnames[:] = sorted(x for x in dirnames if not x.startswith(".git"))
                for fn in sorted(filenames):
                    ap = Path(dirpath) / fn
                    files[ap.relative_to(rd).as_posix()] = ap
            h = hashlib.sha1(f"{repo_id}\n{rd.name}\n".encode())
            for rp, ap in sorted(files.items()):
                h.update(f"{rp}\t{ap.stat().st_size}\n".encode())
            out[rd.name] = Revision(repo_id, rd.name, rd, h.hexdigest(), files)
        return out

    def resolve(self, repo_id: str, rev: str) -> Revision | None:
        revs = self.revisions(repo_id)
        if rev in revs:
            return revs[rev]
        if HEX40.match(rev):
            for r in revs.values():
                if r.commit == rev:
                    return r
        return None

    def commit_of(self, repo_id: str, rev: str = "main") -> str:
        r = self.resolve(repo_id, rev)
        if r is None:
            raise KeyError(f"{repo_id}@{rev}")
        return r.commit

    def file_info(self, rp: str, ap: Path) -> FileInfo:
        st = ap.stat()
        key = (str(ap), st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            fi = self._info_cache.get(key)
        if fi is not None:
            return FileInfo(rp, ap, fi.size, fi.is_lfs, fi.sha256, fi.blob_id, fi.pointer_size)
        is_lfs = ap.suffix.lower() in LFS_SUFFIXES or st.st_size >= LFS_MIN_SIZE
        if is_lfs:
            h = hashlib.sha256()
            for b in _iter_file(ap):
                h.update(b)
            sha = h.hexdigest()
            pointer = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\n"
                       f"size {st.st_size}\n").encode()
            fi = FileInfo(rp, ap, st.st_size, True, sha, _git_blob_sha1(len(pointer), [pointer]), len(pointer))
        else:
            fi = FileInfo(rp, ap, st.st_size, False, None, _git_blob_sha1(st.st_size, _iter_file(ap)))
        with self._lock:
            self._info_cache[key] = fi
        return fi

    # JSON shapes ------------------------------------------------------
    def tree_entry(self, rev: Revision, rp: str, expand: bool = False) -> dict | None:
        if rp in rev.files:
            fi = self.file_info(rp, rev.files[rp])
            e = {"type": "file", "oid": fi.blob_id, "size": fi.size, "path": rp}
            if fi.is_lfs:
                e["lfs"] = {"oid": fi.sha256, "size": fi.size, "pointerSize": fi.pointer_size}
        else:
            prefix = rp.rstrip("/") + "/"
            if not any(p.startswith(prefix) for p in rev.files):
                return None
            tid = hashlib.sha1(f"tree {rev.commit} {rp}".encode()).hexdigest()
            e = {"type": "directory", "oid": tid, "size": 0, "path": rp.rstrip("/")}
        if expand:
            e["lastCommit"] = {"id": rev.commit, "title": f"testbed revision {rev.name}", "date": FIXED_DATE}
            if e["type"] == "file":
                e["securityFileStatus"] = {"status": "safe", "avScan": {"virusFound": False, "virusNames": None},
                                           "pickleImportScan": None}
        return e

    def list_tree(self, rev: Revision, path: str, recursive: bool, expand: bool) -> list[dict] | None:
        path = path.strip("/")
        prefix = path + "/" if path else ""
        if path and path in rev.files:
            return None  # the Hub answers 404 for a file path in /tree
        names: list[str] = []
        seen = set()
        for rp in sorted(rev.files):
            if not rp.startswith(prefix):
                continue
            rest = rp[len(prefix):].split("/")
            for depth in range(1, len(rest) + 1):
                if not recursive and depth > 1:
                    break
                sub = prefix + "/".join(rest[:depth])
                if sub not in seen:
                    seen.add(sub)
                    names.append(sub)
        if path and not names:
            return None
        # Hub order: directories first, then files, each sorted
        entries = [self.tree_entry(rev, n, expand) for n in names]
        entries.sort(key=lambda e: (e["path"].count("/"), e["type"] != "directory", e["path"]))
        return entries

    def model_info(self, repo_id: str, rev: Revision, blobs: bool) -> dict:
        siblings = []
        used = 0
        for rp in sorted(rev.files):
            if blobs:
                fi = self.file_info(rp, rev.files[rp])
                s = {"rfilename": rp, "size": fi.size, "blobId": fi.blob_id}
                if fi.is_lfs:
                    s["lfs"] = {"sha256": fi.sha256, "size": fi.size, "pointerSize": fi.pointer_size}
                used += fi.size
                siblings.append(s)
            else:
                siblings.append({"rfilename": rp})
        owner = repo_id.split("/")[0]
        info = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id, "modelId": repo_id, "author": owner, "sha": rev.commit,
            "lastModified": FIXED_DATE, "createdAt": FIXED_DATE, "private": False,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": ["gguf"], "library_name": "gguf", "siblings": siblings,
        }
        if any(rp.endswith(".gguf") for rp in rev.files):
            info["gguf"] = {}
        if blobs:
            info["usedStorage"] = used
        return info


_API = re.compile(r"^/api/models/([^/]+/[^/]+)(?:/(revision|tree|paths-info)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1.0"

    def log_message(self, fmt, *args):  # quiet
        pass

    # ----------------------------------------------------------- plumbing
    def _record(self) -> Request:
        r = Request(self.command, self.path, self.headers.get("Range"),
                    self.headers.get("Authorization") is not None, headers=dict(self.headers))
        with self.hub._lock:
            self.hub.requests.append(r)
        return r

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None,
              ctype: str = "application/json; charset=utf-8") -> None:
        self._req.status = status
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Date", email.utils.formatdate(usegmt=True))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str, message: str, extra: dict | None = None) -> None:
        h = {"X-Error-Code": code, "X-Error-Message": message}
        h.update(extra or {})
        self._json({"error": message}, status, h)

    def _repo_not_found(self) -> None:
        # The Hub answers 401 to anonymous callers (it will not reveal private repos), 404 otherwise
        status = 404 if self.headers.get("Authorization") else 401
        self._error(status, "RepoNotFound", "Repository not found")

    def _rev_not_found(self, rev: str) -> None:
        self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    # ----------------------------------------------------------- methods
    def do_HEAD(self):
        self._dispatch()

    def do_GET(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        self._req = self._record()
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - debugging aid
            try:
                self._error(500, "InternalError", f"fakehub: {type(e).__name__}: {e}")
            except Exception:
                self.close_connection = True

    def _route(self):
        u = urlsplit(self.path)
        path = unquote(u.path)
        q = parse_qs(u.query)
        hub = self.hub
        if path == "/api/whoami-v2":
            if not self.headers.get("Authorization"):
                return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return self._json({"type": "user", "name": "testbed", "fullname": "Testbed",
                               "auth": {"type": "access_token", "accessToken": {"role": "read"}}})
        m = _API.match(u.path)
        if m:
            repo_id = unquote(m.group(1))
            kind, rev, sub = m.group(2), unquote(m.group(3) or "main"), unquote(m.group(4) or "")
            revision = self._revision(repo_id, rev)
            if revision is None:
                return
            if kind in (None, "revision") and not sub and self.command in ("GET", "HEAD"):
                blobs = q.get("blobs", ["false"])[0].lower() in ("1", "true")
                return self._json(hub.model_info(repo_id, revision, blobs))
            if kind == "tree" and self.command in ("GET", "HEAD"):
                rec = q.get("recursive", ["false"])[0].lower() in ("1", "true")
                exp = q.get("expand", ["false"])[0].lower() in ("1", "true")
                entries = hub.list_tree(revision, sub, rec, exp)
                if entries is None:
                    return self._error(404, "EntryNotFound", f"{sub.strip('/')} does not exist on \"{rev}\"",
                                       {"X-Repo-Commit": revision.commit})
                return self._json(entries)
            if kind == "paths-info" and self.command == "POST" and not sub:
                paths, expand = self._paths_info_body()
                out = []
                for p in paths:
                    e = hub.tree_entry(revision, p.strip("/"), expand)
                    if e is not None:
                        out.append(e)
                return self._json(out)
            return self._error(404, "NotFound", "Not Found")
        m = _RESOLVE.match(u.path)
        if m and self.command in ("GET", "HEAD"):
            return self._resolve(unquote(m.group(1)), unquote(m.group(2)), unquote(m.group(3)))
        return self._error(404, "NotFound", "Not Found")

    def _paths_info_body(self) -> tuple[list[str], bool]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            d = json.loads(raw or b"{}")
            paths = d.get("paths", [])
            return ([paths] if isinstance(paths, str) else list(paths)), bool(d.get("expand"))
        f = parse_qs(raw.decode(), keep_blank_values=True)
        paths = f.get("paths", []) + f.get("paths[]", [])
        return paths, f.get("expand", ["False"])[0].lower() in ("1", "true")

    def _revision(self, repo_id: str, rev: str):
        """The revision, or None after answering RepoNotFound / RevisionNotFound as the Hub does."""
        if not self.hub.revisions(repo_id):
            self._repo_not_found()
            return None
        revision = self.hub.resolve(repo_id, rev)
        if revision is None:
            self._rev_not_found(rev)
        return revision

    def _resolve(self, repo_id: str, rev: str, rp: str):
        hub = self.hub
        revision = self._revision(repo_id, rev)
        if revision is None:
            return
        if rp not in revision.files:
            return self._error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": revision.commit})
        fi = hub.file_info(rp, revision.files[rp])
        headers = {
            "X-Repo-Commit": revision.commit,
            "ETag": fi.etag(),
            "Accept-Ranges": "bytes",
            "Cache-Control": "public, max-age=31536000, immutable" if fi.is_lfs else "private, max-age=0",
            "Content-Disposition": f'inline; filename="{rp.rsplit("/", 1)[-1]}"',
            "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
        }
        if fi.is_lfs:
            headers["X-Linked-Etag"] = fi.etag()
            headers["X-Linked-Size"] = str(fi.size)
        start, end, status = 0, fi.size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            mm = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", rng)
            if not mm or (mm.group(1) == "" and mm.group(2) == ""):
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{fi.size}"})
            a, b = mm.group(1), mm.group(2)
            if a == "":                      # suffix range: last N bytes
                start, end = max(0, fi.size - int(b)), fi.size - 1
            else:
                start = int(a)
                end = min(int(b), fi.size - 1) if b else fi.size - 1
            if start >= fi.size or start > end:
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{fi.size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{fi.size}"
        length = end - start + 1
        self._req.status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = self._take_fault(repo_id, rp)
        sent = 0
        t0 = time.monotonic()
        with open(fi.abs, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(256 * 1024, remaining))
                if not chunk:
                    break
                if cut is not None and sent + len(chunk) >= cut[0]:
                    self.wfile.write(chunk[: max(0, cut[0] - sent)])
                    self.wfile.flush()
                    self._abort(cut[1])
                    return
                self.wfile.write(chunk)
                sent += len(chunk)
                remaining -= len(chunk)
                if hub.rate_limit:
                    ahead = sent / hub.rate_limit - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)

    def _take_fault(self, repo_id: str, rp: str) -> tuple[int, str] | None:
        with self.hub._lock:
            for key in (rp, f"{repo_id}/{rp}"):
                lst = self.hub._faults.get(key)
                if lst:
                    n = lst.pop(0)
                    if not lst:
                        del self.hub._faults[key]
                    return n
        return None

    def _abort(self, mode: str) -> None:
        """Drop the connection mid-body, like a network failure."""
        self.close_connection = True
        self._req.status = -1
        try:
            if mode == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
