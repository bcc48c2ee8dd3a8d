"""Small helpers the tasks share."""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import StringCommand
from pyinfra.api.state import StateStage


def fail_command(message: str) -> StringCommand:
    """A command that fails its host with ``message`` on stderr (and shows as a change in --dry)."""
    return StringCommand(f"echo {shlex.quote('llamarig: ' + message)} >&2; exit 1")


def executing() -> bool:
    """True while pyinfra executes operations, False while it prepares (and in --dry)."""
    return getattr(host.state, "current_stage", None) == StateStage.Execute


def quote_all(words) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)
