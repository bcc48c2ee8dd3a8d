"""The end of a run: a line naming the rigs that deployed and the ones that failed, and why; then the
report of what every rig serves (tasks/report.py).

pyinfra's results table counts operations, and leaves out a rig it never reached;
this line names it. Printed when the pyinfra process exits (after the results),
once per run.
"""

from __future__ import annotations

import atexit

import click
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_state

from . import report

_registered: set[int] = set()


def summary_line(state) -> str | None:
    executed = state.current_stage in (StateStage.Execute, StateStage.Disconnect)
    unreachable = sorted(h.name for h in state.failed_hosts if h not in state.activated_hosts)
    failed = sorted(h.name for h in state.failed_hosts if h in state.activated_hosts)
    if not executed and not unreachable:
        return None
    ok = sorted(h.name for h in state.activated_hosts if h not in state.failed_hosts)
    parts = [f"{len(ok)} rig(s) {'deployed' if executed else 'reached'}" + (f" ({', '.join(ok)})" if ok else "")]
    parts += [f"{name} FAILED: unreachable (could not connect)" for name in unreachable]
    parts += [f"{name} FAILED: an operation failed (its error is above)" for name in failed]
    return "--> llamarig: " + "; ".join(parts)


def _print(state) -> None:
    report.print_reports(state)
    line = summary_line(state)  # the last word: which rigs deployed, which failed
    if line:
        click.echo(line, err=True)


def register() -> None:
    """Arrange for the line to be printed at exit (deploy.py runs once per rig: register once per run)."""
    state = ctx_state.get()
    if state is None or id(state) in _registered:
        return
    _registered.add(id(state))
    atexit.register(_print, state)
