"""GPU persistence mode and power limits through nvidia-smi, set only where they differ."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.operations import files, systemd

from llamarig.release.power import boot_commands, power_changes
from llamarig.release.unit import POWER_UNIT, render_power_unit

from .util import fail_command

QUERY = ("index,name,memory.total,compute_cap,power.limit,power.default_limit,"
         "power.min_limit,power.max_limit,persistence_mode")


class GpuState(FactBase):
    """The rig's GPUs as nvidia-smi reports them: one dict per GPU, in index order."""

    requires_command = "nvidia-smi"

    def command(self):
        return f"nvidia-smi --query-gpu={QUERY} --format=csv,noheader,nounits"

    def process(self, output):
        gpus = []
        for line in output:
            if not line.strip():
                continue
            f = [part.strip() for part in line.split(",")]
            if len(f) < 9:
                continue

            def num(text):
                try:
                    return float(text)
                except ValueError:
                    return None

            gpus.append({
                "index": int(f[0]), "name": f[1], "memory_mib": num(f[2]), "compute_cap": f[3],
                "power_limit": num(f[4]), "power_default": num(f[5]), "power_min": num(f[6]),
                "power_max": num(f[7]), "persistence": f[8].lower() == "enabled",
            })
        return gpus


@operation()
def gpu_power(declared_gpus: list, limits: dict, persistence: bool):
    """
    Check the rig's GPUs against the declared ones, then set persistence mode and power limits.

    + declared_gpus: the host data's ``gpus`` (model, memory_gib), in index order
    + limits: watts by GPU index
    + persistence: whether persistence mode should be on

    Every limit is checked against the GPU's own minimum and maximum before any is set;
    each set limit is read back (nvidia-smi can report success and change nothing).
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


@deploy("GPU power")
def apply(rig):
    doc = rig.doc
    if not doc["gpus"]:
        return None
    limits = {i: doc["power_limits_w"].get(i, doc["power_limit_w"]) for i in range(len(doc["gpus"]))}
    limits = {i: w for i, w in limits.items() if w is not None}
    applied = gpu_power(name="GPU persistence mode and power limits", declared_gpus=doc["gpus"],
                        limits=limits, persistence=doc["power_persistence_mode"])
    text = render_power_unit(host.name, boot_commands(limits, doc["power_persistence_mode"], len(doc["gpus"])))
    unit = files.put(name=f"Boot unit {POWER_UNIT}", src=StringIO(text), dest=f"/etc/systemd/system/{POWER_UNIT}", mode="644")
    systemd.daemon_reload(name="systemd daemon-reload", _if=unit.did_change)
    systemd.service(name=f"Enable {POWER_UNIT}", service=POWER_UNIT, running=True, enabled=True)
    return applied
