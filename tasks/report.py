"""The closing report of a deploy (llamarig/report.py): what each rig said while the run went (its
services' check verdicts, a restarted unit's exposure, the GPUs' memory in use) is kept here, and at the
end the report is printed after pyinfra's results and, after a real deploy, written as JSON beside the
inventory (``INVENTORY.report.json``, or ``$LLAMARIG_REPORT``)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import click
from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.api.state import StateStage

from llamarig.report import render, rig_report

from .util import executing

# host name -> {"deployment": ..., "live": {"verdicts": {unit: verdict}, "gpus": [...], "exposure": {...}}}
_rigs: dict[str, dict] = {}
REPORT_ENV = "LLAMARIG_REPORT"


def print_reports(state) -> None:
    """The report of every rig this run prepared, printed; after a real deploy also written as JSON."""
    failed = {h.name for h in state.failed_hosts}
    reports = []
    for name in sorted(_rigs):
        entry = _rigs[name]
        d = entry["deployment"]
        if d is None or d.rig is None or d.release is None:
            continue
        if name in failed:  # unreachable, or an operation failed: what it serves is not what the data says
            reports.append({"rig": name, "failed": True, "gpus": [], "services": [], "executed": False})
            continue
        reports.append(rig_report(d.rig, d.release, entry["live"] or None))
    if not reports:
        return
    executed = state.current_stage in (StateStage.Execute, StateStage.Disconnect)
    click.echo(render(reports, dry=not executed), err=True)
    if executed:
        path = report_path()
        if path is not None:
            try:
                path.write_text(json.dumps({"rigs": reports}, indent=1, sort_keys=True, default=str) + "\n")
                click.echo(f"--> llamarig: report written to {path}", err=True)
            except OSError as exc:
                click.echo(f"--> llamarig: could not write the report to {path}: {exc}", err=True)


def report_path() -> Path | None:
    """``$LLAMARIG_REPORT``, else ``INVENTORY.report.json`` beside the inventory pyinfra was given."""
    if os.environ.get(REPORT_ENV):
        return Path(os.environ[REPORT_ENV])
    for word in sys.argv[1:]:
        if word.endswith(".py") and Path(word).name != "deploy.py" and Path(word).is_file():
            return Path(word).with_suffix(".report.json")
    return None


def remember(deployment) -> None:
    """This rig's deployment, for the report at the end."""
    _rigs.setdefault(host.name, {"deployment": deployment, "live": {}})["deployment"] = deployment


def record_verdict(unit: str, verdict: dict) -> None:
    _rigs.setdefault(host.name, {"deployment": None, "live": {}})["live"].setdefault("verdicts", {})[unit] = verdict


class GpuUsage(FactBase):
    """What nvidia-smi shows each GPU using now: [{"index", "memory_used_mib", "power_limit_w"}]."""

    def command(self):
        return "nvidia-smi --query-gpu=index,memory.used,power.limit --format=csv,noheader,nounits"

    def requires_command(self):
        return "nvidia-smi"

    def process(self, output):
        out = []
        for line in output:
            f = [x.strip() for x in line.split(",")]
            try:
                out.append({"index": int(f[0]), "memory_used_mib": int(float(f[1])), "power_limit_w": float(f[2])})
            except (ValueError, IndexError):
                continue
        return out


class Exposure(FactBase):
    """``systemd-analyze security``'s overall exposure level of a unit (0 best, 10 worst), or None."""

    def command(self, unit):
        return f"systemd-analyze security --no-pager {unit} 2>/dev/null | tail -n 3 || true"

    def process(self, output):
        for line in output:
            match = EXPOSURE.search(line)
            if match:
                return float(match.group(1))
        return None


EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


@operation()
def unit_exposure(unit: str):
    """
    Measure a (re)started unit's exposure for the closing report; changes nothing.

    + unit: the unit's file name
    """
    if not executing():
        host.noop(f"{unit}'s exposure is measured while the deploy executes")
        return
    level = host.get_fact(Exposure, unit=unit)
    _rigs.setdefault(host.name, {"deployment": None, "live": {}})["live"].setdefault("exposure", {})[unit] = level
    host.noop(f"{unit}: exposure {level}")
    return
    yield  # an operation


@operation()
def gpu_usage():
    """
    Read what each GPU uses once the services run, for the closing report; changes nothing.
    """
    if not executing():
        host.noop("GPU memory is read while the deploy executes")
        return
    gpus = host.get_fact(GpuUsage) or []
    _rigs.setdefault(host.name, {"deployment": None, "live": {}})["live"]["gpus"] = gpus
    host.noop(f"{len(gpus)} GPU(s) read")
    return
    yield  # an operation


