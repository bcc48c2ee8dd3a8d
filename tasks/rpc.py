"""A worker rig's rpc-servers (``rpc_servers``): their units, restarted when unit or build changed, then checked
listening; and the check a main rig makes of its workers before its service's unit changes.

deploy.py runs this before the services: pyinfra executes one operation on every host before the next, so a
worker's rpc-server is up (and checked) before any main rig's llama-server that uses it is changed.
"""

from __future__ import annotations

import json
import shlex
import time
from io import StringIO

from pyinfra import host, state
from pyinfra.api import FactBase, deploy, operation
from pyinfra.context import ctx_host
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from llamarig import layout, programs
from llamarig.release import rpc

from . import rig_programs
from .util import executing, fail_command, restart_command

# Connect to every endpoint (a TCP connection is what llama.cpp's RPC client opens first); one JSON line of
# the ones that did not answer. Repeated for up to WAIT seconds (a just started rpc-server binds in a moment).
_PROBE = r"""
import json, socket, sys, time
eps, wait = json.loads(sys.argv[1]), float(sys.argv[2])
end = time.time() + wait
while True:
    bad = {}
    for ep in eps:
        host, _, port = ep.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
        except OSError as exc:
            bad[ep] = str(exc)
    if not bad or time.time() >= end:
        break
    time.sleep(1)
print(json.dumps(bad))
"""


class UnreachableEndpoints(FactBase):
    """Of ``endpoints`` (HOST:PORT), those this rig cannot open a TCP connection to, with why ({} when all answer)."""

    def command(self, endpoints, wait=0):
        return f"python3 -c {shlex.quote(_PROBE)} {shlex.quote(json.dumps(list(endpoints)))} {float(wait)}"

    def process(self, output):
        try:
            return json.loads("\n".join(output).strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"(probe)": "printed nothing (is python3 on the rig?)"}

    @staticmethod
    def default():
        return {}


@operation()
def rpc_listening(unit: str, endpoint: str, wait_s: int = 60):
    """
    Check that a just (re)started rpc-server accepts connections on its declared address, on its own rig.

    + unit: the rpc-server's unit
    + endpoint: ADDRESS:PORT it binds
    + wait_s: how long it may take

    Yields nothing when it listens; else fails the host with the unit's journal tail.
    """
    if not executing():
        host.noop(f"{unit} is checked listening while the deploy executes")
        return
    bad = host.get_fact(UnreachableEndpoints, endpoints=[endpoint], wait=wait_s)
    if bad:
        yield fail_command(f"{unit} does not accept connections on {endpoint} ({bad.get(endpoint)})", journal=unit)


def reachable_or_fail(unit: str, workers: list[tuple[str, str]]):
    """While executing: a command failing the host when one of ``workers`` ((label, HOST:PORT)) cannot be reached
    from this rig, else None. Called before a unit that uses them is changed."""
    if not workers or not executing():
        return None
    bad = host.get_fact(UnreachableEndpoints, endpoints=[ep for _label, ep in workers], wait=10)
    if not bad:
        return None
    said = "; ".join(f"{label} at {ep}: {bad[ep]}" for label, ep in workers if ep in bad)
    return fail_command(f"{unit}: its RPC worker(s) cannot be reached from this rig ({said}); deploy the worker "
                        f"rig(s) or check the private network between them. The unit and the running service were "
                        f"left as they were")


class StartedAt(FactBase):
    """When a unit last became active (systemd's ActiveEnterTimestamp, microseconds since the epoch; 0 never).
    ``nonce`` makes each asking a new fact: what is asked while a deploy executes must not be an earlier answer."""

    def command(self, unit, nonce=""):
        return f"systemctl show -p ActiveEnterTimestamp --timestamp=unix --value {shlex.quote(unit)} 2>/dev/null || true"

    def process(self, output):
        text = "".join(output).strip().lstrip("@")
        try:
            return int(float(text) * 1_000_000)
        except ValueError:
            return 0

    @staticmethod
    def default():
        return 0


@operation()
def restart_after_workers(unit: str, workers: list):
    """
    Restart a service whose RPC workers' rpc-servers started after it: llama.cpp's RPC client does not
    reconnect, so a llama-server that outlived its worker's rpc-server fails its next request.

    + unit: the service's unit on this rig
    + workers: (host name, rpc unit) of every worker it uses; hosts outside this run are skipped

    Reads the start times while executing (the workers are deployed by earlier operations); yields nothing
    when the service started after all of them.
    """
    if not executing():
        host.noop(f"{unit} is restarted while executing if an RPC worker started after it")
        return
    nonce = str(time.time())
    mine = host.get_fact(StartedAt, unit=unit, nonce=nonce)
    later = []
    for name, rpc_unit in workers:
        other = next((h for h in state.inventory if h.name == name), None)
        if other is None or other not in state.active_hosts:
            continue
        with ctx_host.use(other):
            started = other.get_fact(StartedAt, unit=rpc_unit, nonce=nonce)
        if mine and started > mine:
            later.append(f"{name}'s {rpc_unit}")
    if later:
        yield (f"echo {shlex.quote(f'llamarig: {unit}: restarted: ' + ', '.join(later) + ' started after it')}; "
               + restart_command(unit))


@deploy("RPC servers")
def apply(deployment, built):
    doc, release = deployment.doc, deployment.release
    if not release.rpc_units:
        return
    rig_programs.install(doc, programs.RPC_CACHE)
    server.user(name=f"Service user {doc['service_user']}", user=doc["service_user"], system=True,
                home=layout.STATE_DIR, shell="/usr/sbin/nologin", create_home=False)
    put = {name: files.put(name=f"Unit {name}", src=StringIO(u.text), dest=u.path, mode="644")
           for name, u in release.rpc_units.items()}
    systemd.daemon_reload(name="systemd daemon-reload (RPC servers)", _if=any_changed(*put.values()))
    build_ops = built.ops if built else ()
    for name, u in release.rpc_units.items():
        server.shell(name=f"Restart {name} (unit or build changed)", commands=[restart_command(name)],
                     _if=any_changed(put[name], *build_ops))
        systemd.service(name=f"Run {name}", service=name, running=True, enabled=True)
        listen = rpc.listen_endpoint(u.listen)
        rpc_listening(name=f"{name} listens on {listen}", unit=name, endpoint=listen)
