"""Render each service's systemd unit, install it, and (re)start it only when its unit, binary or model changed."""

from __future__ import annotations

import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from llamarig import layout
from llamarig.unit import POWER_UNIT, render_unit

UNIT_DIR = "/etc/systemd/system"


class LlamarigUnits(FactBase):
    """Names of the llamarig-*.service units of services installed on the rig (the power unit is not one)."""

    @staticmethod
    def default():
        return []

    def command(self):
        return f"ls {UNIT_DIR} | grep -E '^llamarig-.*\\.service$' || true"

    def process(self, output):
        return sorted(line.strip() for line in output if line.strip() and line.strip() != POWER_UNIT)


def rendered_units(rig) -> dict[str, str]:
    """Unit file name -> text, for every declared service of the rig."""
    doc = rig.doc
    return {
        layout.unit_name(svc["name"]): render_unit(host.name, doc, svc, rig.models[svc["model"]].file)
        for svc in doc["services"]
    }


@deploy("Services")
def apply(rig, build_ops=(), model_ops=None):
    doc = rig.doc
    model_ops = model_ops or {}
    server.user(name=f"Service user {doc['service_user']}", user=doc["service_user"], system=True,
                home="/var/lib/llamarig", shell="/usr/sbin/nologin", create_home=False)
    units = rendered_units(rig)

    # Units of services no longer declared are stopped and removed.
    stale = [u for u in host.get_fact(LlamarigUnits) if u not in units]
    removed = []
    for unit in stale:
        systemd.service(name=f"Stop {unit} (no longer declared)", service=unit, running=False, enabled=False)
        removed.append(files.file(name=f"Remove {unit}", path=f"{UNIT_DIR}/{unit}", present=False))

    put = {}
    for svc in doc["services"]:
        unit = layout.unit_name(svc["name"])
        put[unit] = files.put(name=f"Unit {unit}", src=StringIO(units[unit]), dest=f"{UNIT_DIR}/{unit}", mode="644")
    every = [*put.values(), *removed]
    if every:
        systemd.daemon_reload(name="systemd daemon-reload", _if=any_changed(*every))

    for svc in doc["services"]:
        unit = layout.unit_name(svc["name"])
        triggers = [put[unit], *build_ops]
        if svc["model"] in model_ops:
            triggers.append(model_ops[svc["model"]])
        # reset-failed first: a unit that hit its start limit (say, yesterday's bad model) refuses a plain restart.
        server.shell(name=f"Restart {unit} (unit, binary or model changed)",
                     commands=[f"systemctl reset-failed {unit} 2>/dev/null || true; systemctl restart {unit}"],
                     _if=any_changed(*triggers))
        systemd.service(name=f"Run {unit}", service=unit, running=True, enabled=True)
    return put


def journal_tail_command(unit: str, lines: int = 40) -> str:
    return f"journalctl -u {shlex.quote(unit)} -n {lines} --no-pager -o cat"
