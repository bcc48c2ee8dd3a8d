"""The programs llamarig runs on a rig (``rig_programs/``): where their sources are on the controller.

They are copied to the rig (``layout.libexec``) or sent inline (``python3 -c``); they use only
the Python standard library and POSIX sh, and every shared name or path reaches them as an
argument from ``llamarig/layout.py``.
"""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parents[1] / "rig_programs"

BUILD = "llamarig-build.sh"
FETCH = "llamarig-fetch-model.py"
CHECK = "llamarig-check.py"
BENCH = "llamarig-bench.py"
TUNE = "llamarig-tune.py"
RPC_CACHE = "llamarig-rpc-cache.py"


def path(name: str) -> Path:
    return DIR / name


def source(name: str) -> str:
    return path(name).read_text()
