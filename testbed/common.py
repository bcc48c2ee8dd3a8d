"""Shared helpers: cache location, atomic dirs, free ports, logging."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def cache_dir() -> Path:
    p = Path(os.environ.get("LLAMARIG_TESTBED_CACHE", "/var/cache/llamarig-testbed"))
    p.mkdir(parents=True, exist_ok=True)
    return p


def dl_dir() -> Path:
    p = cache_dir() / "dl"
    p.mkdir(parents=True, exist_ok=True)
    return p


def log(msg: str) -> None:
    print(f"[testbed {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run([str(c) for c in cmd], **kw)


def rmtree(path: Path) -> None:
    """Remove a tree that may contain a whole rootfs (read-only dirs, etc.)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        # chattr +i files are not expected; rm -rf copes with odd permissions
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def tmp_sibling(final: Path, tag: str = "tmp") -> Path:
    return final.with_name(f".{final.name}.{tag}-{os.getpid()}")


def clean_stale_tmp(final: Path) -> None:
    """Remove leftovers of interrupted builds of `final` (any pid)."""
    for p in final.parent.glob(f".{final.name}.*-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if pid != os.getpid() and _pid_alive(pid):
            continue
        rmtree(p)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def which(name: str) -> str:
    p = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not p:
        raise RuntimeError(f"{name} not found on this host")
    return p
