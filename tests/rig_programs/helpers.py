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


SYSTEMCTL = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_RIG/systemctl.log"
case "$1" in
    show) if [ "$3" = ActiveEnterTimestamp ]; then cat "$FAKE_RIG/active_since" 2>/dev/null; else cat "$FAKE_RIG/state"; fi ;;
    restart) printf 'active\\nrunning\\n' > "$FAKE_RIG/state" ;;
esac
exit 0
"""
JOURNALCTL = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_RIG/journalctl.log"
cat "$FAKE_RIG/journal"
"""
SYSTEMD_ANALYZE = """#!/bin/sh
printf '%s\\n' "$*" >> "$FAKE_RIG/systemd-analyze.log"
cat "$FAKE_RIG/security"
"""
SECURITY = """  NAME                          DESCRIPTION                                  EXPOSURE
✓ PrivateNetwork=               Service has no access to the host's network       0.5
✗ RootDirectory=/RootImage=     Service runs within the host's root directory     0.1

→ Overall exposure level for llamarig-chat.service: 4.2 OK 🙂
"""


class Rig:
    """The stand-in commands' answers (files under dir) and what they were asked."""

    def __init__(self, root: Path):
        self.dir = root
        for name, text in (("systemctl", SYSTEMCTL), ("journalctl", JOURNALCTL), ("systemd-analyze", SYSTEMD_ANALYZE)):
            stand_in(root / "bin", name, text)
        self.state("active", "running")
        self.journal("llama-server: model loaded\n")
        (root / "security").write_text(SECURITY)
        self.env = env_with_path(root / "bin", FAKE_RIG=str(root))

    def state(self, active: str, sub: str) -> None:
        (self.dir / "state").write_text(f"{active}\n{sub}\n")

    def journal(self, text: str) -> None:
        (self.dir / "journal").write_text(text)

    def security(self, text: str) -> None:
        (self.dir / "security").write_text(text)

    def log(self, name="systemctl") -> list[str]:
        path = self.dir / f"{name}.log"
        return path.read_text().splitlines() if path.exists() else []
