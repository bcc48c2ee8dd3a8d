"""Small helpers the tasks share."""

from __future__ import annotations

import os
import shlex

from pyinfra import host
from pyinfra.api import StringCommand
from pyinfra.api.state import StateStage
from pyinfra.connectors.util import CommandOutput


def fail_command(message: str, journal: str | None = None) -> StringCommand:
    """A command that fails its host with ``message`` on stderr (and shows as a change in --dry); with
    ``journal``, that unit's last journal lines after it (one command: its exit ends the host's run)."""
    tail = f"{journal_tail(journal)}; " if journal else ""
    return StringCommand(f"echo {shlex.quote('llamarig: ' + message)} >&2; {tail}exit 1")


def journal_tail(unit: str) -> str:
    """Shell words printing ``unit``'s last journal lines on stderr, under a header."""
    return (f"echo {shlex.quote(f'--- journalctl -u {unit} (last lines)')} >&2; "
            f"journalctl -u {shlex.quote(unit)} -n 30 --no-pager -o cat >&2")


def restart_command(unit: str) -> str:
    """Restart ``unit``, reset-failed first: a unit that hit its start limit refuses a plain restart."""
    q = shlex.quote(unit)
    return f"systemctl reset-failed {q} 2>/dev/null || true; systemctl restart {q}"


def executing() -> bool:
    """True while pyinfra executes operations, False while it prepares (and in --dry)."""
    return getattr(host.state, "current_stage", None) == StateStage.Execute


def quote_all(words) -> str:
    return " ".join(shlex.quote(str(w)) for w in words)


class LiveCommand(StringCommand):
    """A shell command whose output pyinfra prints as it comes, each line prefixed with the rig's name
    (pyinfra's own live output, which ``-vvv`` turns on for every command: here for one command only).
    For the long steps (builds, downloads, waits) whose programs print a progress line every few seconds.
    On failure the lines are not printed a second time."""

    def execute(self, state, host, connector_arguments):
        connector_arguments.update(self.connector_arguments)
        status, output = host.run_shell_command(self, print_output=True, print_input=state.print_input,
                                                **connector_arguments)
        if status is False and not state.print_output:
            return status, CommandOutput([])  # already on the screen
        return status, output


PROGRESS_ENV = "LLAMARIG_PROGRESS_S"


def progress_env() -> str:
    """``LLAMARIG_PROGRESS_S=N `` for a rig program when the controller's environment sets how often long
    steps report (seconds; the programs' default is 10)."""
    value = os.environ.get(PROGRESS_ENV, "")
    return f"{PROGRESS_ENV}={int(value)} " if value.isdigit() and int(value) > 0 else ""
