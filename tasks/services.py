"""Install each service's unit from the release, and (re)start it only when its unit, binary, key or model changed."""

from __future__ import annotations

import json
import shlex
from io import StringIO

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from llamarig import layout
from llamarig.forks.helpflags import accepted_flags, unknown_flags
from llamarig.release.unit import POWER_UNIT

from .root_files import secret_file
from .rpc import reachable_or_fail, restart_after_workers
from .util import executing, fail_command, restart_command


class LlamarigUnits(FactBase):
    """Names of the llamarig-*.service units of services installed on the rig (the power unit is not one)."""

    @staticmethod
    def default():
        return []

    def command(self):
        return f"ls {shlex.quote(layout.UNIT_DIR)} | grep -E '^llamarig-.*\\.service$' || true"

    def process(self, output):
        return sorted(line.strip() for line in output if line.strip() and line.strip() != POWER_UNIT)


class CredentialFiles(FactBase):
    """The API-key files in llamarig's credentials directory."""

    @staticmethod
    def default():
        return []

    def command(self, directory):
        q = shlex.quote(directory)
        return f"test -d {q} && find {q} -maxdepth 1 -type f -name '*.api-key' || true"

    def process(self, output):
        return sorted(line.strip() for line in output if line.strip())


class ServerHelp(FactBase):
    """What a llama-server binary prints for --help ('' when it is missing)."""

    def command(self, binary):
        q = shlex.quote(binary)
        return f"if test -x {q}; then {q} --help 2>&1 || true; fi"

    def process(self, output):
        return "\n".join(output)

    @staticmethod
    def default():
        return ""


@operation()
def server_unit(unit: str, text: str, argv: list, fork: str, binary: str, workers: list | None = None):
    """
    Install a llama-server unit, once the build it runs has shown it accepts every flag.

    + unit: the unit's file name
    + text: the unit, from the release
    + argv: the llama-server arguments in it (extra arguments included)
    + fork: llama.cpp or ik_llama.cpp (ik's --help leaves flags out; see llamarig/forks/helpflags.py)
    + binary: the llama-server of the build the unit will run
    + workers: (label, HOST:PORT) of the RPC servers the service uses (rpc_workers)

    While executing, reads ``binary --help``; a flag it does not list fails the host with the
    flags named, and the installed unit (and the running service) stay as they were. So does an
    RPC worker this rig cannot reach.

    **Example:**

    .. code:: python

        server_unit(name="Unit", unit="llamarig-glm.service", text=u.text, argv=list(u.argv),
                    fork="llama.cpp", binary=u.binary)
    """
    if executing():
        unreachable = reachable_or_fail(unit, workers or [])
        if unreachable is not None:
            yield unreachable
            return
        help_text = host.get_fact(ServerHelp, binary=binary)
        if not help_text.strip():
            yield fail_command(f"{unit}: {binary} is missing or prints no --help; the unit was left as it was")
            return
        unknown = unknown_flags(list(argv), accepted_flags(fork, help_text))
        if unknown:
            yield fail_command(f"{unit}: this build's llama-server does not accept {', '.join(unknown)} "
                               f"({binary} --help); the unit and the running service were left as they were")
            return
    yield from files.put._inner(src=StringIO(text), dest=layout.unit_path(unit), mode="644")


@deploy("Services")
def apply(deployment, built, model_ops=None):
    doc, rig, release = deployment.doc, deployment.rig, deployment.release
    model_ops = model_ops or {}
    server.user(name=f"Service user {doc['service_user']}", user=doc["service_user"], system=True,
                home=layout.STATE_DIR, shell="/usr/sbin/nologin", create_home=False)

    # Units of services no longer declared are stopped and removed, with what the deploy kept of them.
    removed = []
    for unit in [u for u in host.get_fact(LlamarigUnits) if u not in release.units and u not in release.rpc_units]:
        systemd.service(name=f"Stop {unit} (no longer declared)", service=unit, running=False, enabled=False)
        removed.append(files.file(name=f"Remove {unit}", path=layout.unit_path(unit), present=False))
        files.file(name=f"Forget the known-good {unit}", path=layout.known_good_record(unit), present=False)
        files.file(name=f"Forget the check of {unit}", path=layout.expectation_file(unit), present=False)

    # API keys: root-only files systemd hands to the server (LoadCredential=); stale ones removed.
    keys = {}
    for svc in doc["services"]:
        key = rig.api_keys.get(svc["name"])
        if key:
            path = layout.api_key_file(svc["name"])
            keys[svc["name"]] = secret_file(name=f"API key of {svc['name']} ({path}, root only)", path=path,
                                            secret=key + "\n")
    for path in host.get_fact(CredentialFiles, directory=layout.CREDENTIALS_DIR):
        if path not in {layout.api_key_file(n) for n in keys}:
            files.file(name=f"Remove {path} (no longer declared)", path=path, present=False)

    put = {}
    files.directory(name="Live check expectations", path=layout.EXPECT_DIR, present=True)
    for name, u in release.units.items():
        svc = next(s for s in doc["services"] if s["name"] == u.service)
        workers = [(f"{d['worker']}/{d['server']}", d["endpoint"]) for d in svc.get("rpc_devices") or []]
        put[name] = server_unit(name=f"Unit {name}", unit=name, text=u.text, argv=list(u.argv),
                                fork=doc["build_fork"], binary=u.binary, workers=list(dict.fromkeys(workers)))
        files.put(name=f"Live check of {name}", src=StringIO(json.dumps(u.expect, indent=1, sort_keys=True) + "\n"),
                  dest=layout.expectation_file(name), mode="644")
    every = [*put.values(), *removed]
    if every:
        systemd.daemon_reload(name="systemd daemon-reload", _if=any_changed(*every))

    build_ops = built.ops if built else ()
    restarted = {}
    for svc in doc["services"]:
        unit = layout.unit_name(svc["name"])
        triggers = [put[unit], *build_ops]
        if svc["name"] in keys:
            triggers.append(keys[svc["name"]])
        if svc["model"] in model_ops:
            triggers.append(model_ops[svc["model"]])
        restarts = [server.shell(name=f"Restart {unit} (unit, binary or model changed)",
                                 commands=[restart_command(unit)], _if=any_changed(*triggers))]
        workers = sorted({(d["worker"], layout.rpc_unit_name(d["server"])) for d in svc.get("rpc_devices") or []})
        if workers:
            restarts.append(restart_after_workers(name=f"Restart {unit} if an RPC worker started after it",
                                                  unit=unit, workers=workers))
        restarted[unit] = any_changed(*restarts)  # whether the unit restarted in this run (verify waits for it)
        systemd.service(name=f"Run {unit}", service=unit, running=True, enabled=True)
    return release.units, restarted
