"""Shared bits of the rig programs' tests: where the programs are, and stand-in commands on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = ROOT / "rig_programs"


def program(name: str) -> Path:
    return PROGRAMS / name


def stand_in(bindir: Path, name: str, text: str) -> Path:
    """An executable script ``bindir/name`` (put bindir first on PATH to stand in for the real command)."""
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def env_with_path(bindir: Path, **extra: str) -> dict:
    env = dict(os.environ, **extra)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env
