import socket
import time

import pytest

from .conftest import need_root
from testbed.common import free_port
from testbed.rig import Rig, _listener_pids, _container_root, gpu_specs, processes_of, stop_all

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rig(rigs_dir):
    need_root()
    r = Rig.create("tb-slow", free_port(), gpu_specs("2x3090", "tb-slow"), base_dir=rigs_dir)
    r.boot()
    yield r
    r.stop()
    assert not r.is_running and processes_of(r.root) == []


def q(rig, fields="name,power.limit"):
    return rig.ssh(f"nvidia-smi --query-gpu={fields} --format=csv,noheader").stdout.splitlines()


def test_boot_ssh_and_power_limit_reset_on_reboot(rig):
    assert rig.is_running
    assert rig.ssh("hostname").stdout.strip() == "tb-slow"
    assert rig.ssh("systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded")
    assert q(rig) == ["NVIDIA GeForce RTX 3090, 350.00 W"] * 2
    r = rig.ssh("nvidia-smi -i 0 -pl 300")
    assert "was set to 300.00 W from 350.00 W." in r.stdout
    assert q(rig)[0] == "NVIDIA GeForce RTX 3090, 300.00 W"
    rc = rig.reboot()
    assert rc == 133
    assert q(rig) == ["NVIDIA GeForce RTX 3090, 350.00 W"] * 2


def test_ssh_port_belongs_to_the_container(rig):
    pids = _listener_pids(rig.ssh_port)
    assert pids and all(_container_root(p) == str(rig.root) for p in pids)
    # sshd listens on loopback only (the containers share the host network)
    assert rig.ssh(f"ss -Hltn 'sport = :{rig.ssh_port}'").stdout.split()[3] == f"127.0.0.1:{rig.ssh_port}"
    # nothing else in the container listens on a TCP port that could clash with the host
    ports = {l.split()[3] for l in rig.ssh("ss -Hltn").stdout.splitlines()}
    ours = {l for l in ports if l.endswith(f":{rig.ssh_port}")}
    assert ours == {f"127.0.0.1:{rig.ssh_port}"}


def test_create_refuses_port_held_by_host_process(rigs_dir):
    need_root()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    try:
        with pytest.raises(RuntimeError, match="in use by a non-testbed process"):
            Rig.create("tb-clash", s.getsockname()[1], [], base_dir=rigs_dir)
    finally:
        s.close()


def test_stale_container_is_cleaned_up(rigs_dir):
    """A harness killed hard leaves nspawn (or its orphaned container) running:
    the next create of that name/port kills it."""
    need_root()
    import os
    import signal
    port = free_port()
    r = Rig.create("tb-stale", port, [], base_dir=rigs_dir).boot()
    os.kill(r.pid, signal.SIGKILL)          # container survives its nspawn
    time.sleep(1)
    assert processes_of(r.root)
    r2 = Rig.create("tb-stale-2", port, [], base_dir=rigs_dir)   # same port, other name
    assert processes_of(r.root) == []
    r2.boot()
    assert r2.ssh("hostname").stdout.strip() == "tb-stale-2"
    r2.stop()
    stop_all(rigs_dir)
    assert not r2.is_running
