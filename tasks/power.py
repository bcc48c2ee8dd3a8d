"""GPU persistence mode and power limits through nvidia-smi, set only where they differ, and again at every boot."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import StringCommand, deploy, operation
from pyinfra.facts.systemd import SystemdEnabled, SystemdStatus
from pyinfra.operations import files, systemd

from llamarig import layout
from llamarig.release.power import declared_limits, power_changes
from llamarig.release.unit import POWER_UNIT

from .gpu_facts import GpuState
from .util import fail_command, journal_tail


@operation()
def gpu_power(declared_gpus: list, limits: dict, persistence: bool):
    """
    Check the rig's GPUs against the declared ones, then set persistence mode and power limits.

    + declared_gpus: the host data's ``gpus`` (model, memory_gib), in index order
    + limits: watts by GPU index
    + persistence: whether persistence mode should be on

    Every limit is checked against the GPU's own minimum and maximum before any is set;
    each set limit is read back (nvidia-smi can report success and change nothing).

    **Example:**

    .. code:: python

        gpu_power(name="Power", declared_gpus=[{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}],
                  limits={0: 300}, persistence=True)
    """
    gpus = host.get_fact(GpuState)
    if gpus is None or (not gpus and declared_gpus):
        yield fail_command(f"the rig declares {len(declared_gpus)} GPU(s) but nvidia-smi is missing or reports none")
        return
    gpus = [dict(g) for g in gpus]
    limits = {int(index): float(watts) for index, watts in limits.items()}
    commands, problems = power_changes(list(declared_gpus), gpus, limits, persistence)
    if problems:
        yield fail_command("; ".join(problems))
        return
    if not commands:
        host.noop("GPU persistence mode and power limits are as declared")
    for command in commands:
        yield StringCommand(command)


@operation()
def boot_unit_started(unit: str):
    """
    Enable ``unit`` and start it now, where it is not already; if it fails, its status and journal
    are shown with the error (a failed oneshot says nothing else).

    + unit: the unit's name
    """
    running = host.get_fact(SystemdStatus, services=unit).get(unit)
    enabled = host.get_fact(SystemdEnabled, services=unit).get(unit)
    if running and enabled:
        host.noop(f"{unit} is enabled and has run")
        return
    q = shlex.quote(unit)
    yield StringCommand(
        f"systemctl enable {q} && systemctl start {q} || {{ rc=$?; "
        f"systemctl status --no-pager -l {q} >&2; {journal_tail(unit)}; exit $rc; }}")


@deploy("GPU power")
def apply(deployment):
    doc = deployment.doc
    if not doc["gpus"]:
        return None
    applied = gpu_power(name="GPU persistence mode and power limits", declared_gpus=doc["gpus"],
                        limits=declared_limits(doc), persistence=doc["power_persistence_mode"])
    unit = files.put(name=f"Boot unit {POWER_UNIT}", src=StringIO(deployment.release.power_unit),
                     dest=layout.unit_path(POWER_UNIT), mode="644")
    systemd.daemon_reload(name="systemd daemon-reload", _if=unit.did_change)
    boot_unit_started(name=f"Enable {POWER_UNIT}", unit=POWER_UNIT)
    return applied
