"""A "rig": a systemd-nspawn container booted from the cached rootfs, with fake GPUs.

Containers share the host network namespace (``--network-veth`` does not work on
this host), so each rig's sshd listens on 127.0.0.1:<ssh_port>.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from .common import cache_dir, log, port_in_use, rmtree, run
from .rootfs import ensure_rootfs, install_fake_smi

BOOT_TIMEOUT = 120.0
NSPAWN_REBOOT_RC = 133  # systemd-nspawn exits with 133 when the container reboots
RIG_MARKER = "rig.json"

# name -> GPU declaration (see fake_nvidia_smi.py); used by gpu_specs("2x3090")
GPU_PRESETS: dict[str, dict] = {
    "3090": {"name": "NVIDIA GeForce RTX 3090", "memory_mib": 24576, "compute_cap": "8.6",
             "power_default_w": 350.0, "power_min_w": 100.0, "power_max_w": 350.0},
    "4090": {"name": "NVIDIA GeForce RTX 4090", "memory_mib": 24564, "compute_cap": "8.9",
             "power_default_w": 450.0, "power_min_w": 150.0, "power_max_w": 600.0},
    "3060": {"name": "NVIDIA GeForce RTX 3060", "memory_mib": 12288, "compute_cap": "8.6",
             "power_default_w": 170.0, "power_min_w": 100.0, "power_max_w": 170.0},
    "p40": {"name": "Tesla P40", "memory_mib": 23040, "compute_cap": "6.1",
            "power_default_w": 250.0, "power_min_w": 125.0, "power_max_w": 250.0},
    "a100": {"name": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "compute_cap": "8.0",
             "power_default_w": 400.0, "power_min_w": 100.0, "power_max_w": 400.0},
    "h100": {"name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "compute_cap": "9.0",
             "power_default_w": 700.0, "power_min_w": 200.0, "power_max_w": 700.0},
}


def gpu_specs(spec: str, rig_name: str = "rig") -> list[dict]:
    """'2x3090' or '3090,4090' or '' -> complete GPU declarations with bus ids/uuids."""
    gpus: list[dict] = []
    for part in [p for p in spec.split(",") if p.strip()]:
        count, _, model = part.strip().rpartition("x")
        n = int(count) if count else 1
        for _ in range(n):
            gpus.append(dict(GPU_PRESETS[model.lower()]))
    return complete_gpus(gpus, rig_name)


def complete_gpus(gpus: list[dict], rig_name: str) -> list[dict]:
    out = []
    for i, g in enumerate(gpus):
        g = dict(g)
        g.setdefault("name", "NVIDIA GeForce RTX 3090")
        g.setdefault("memory_mib", 24576)
        g.setdefault("compute_cap", "8.6")
        g.setdefault("pci_bus_id", "00000000:%02X:00.0" % (i + 1))
        g.setdefault("uuid", "GPU-" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"llamarig-testbed/{rig_name}/{i}")))
        g.setdefault("power_default_w", 350.0)
        g.setdefault("power_min_w", 100.0)
        g.setdefault("power_max_w", g["power_default_w"])
        out.append(g)
    return out


# ----------------------------------------------------------------- ssh key
def ensure_ssh_key() -> Path:
    """The testbed's ed25519 key pair at $CACHE/ssh/id_ed25519 (+ .pub)."""
    d = cache_dir() / "ssh"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = d / "id_ed25519"
    if key.exists() and (d / "id_ed25519.pub").exists():
        return key
    tmp = d / f".tmp-{os.getpid()}-id_ed25519"
    tmp_pub = Path(str(tmp) + ".pub")
    for p in (tmp, tmp_pub):
        if p.exists():
            p.unlink()
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llamarig-testbed", "-f", tmp],
        stdout=subprocess.DEVNULL)
    os.rename(tmp_pub, d / "id_ed25519.pub")
    os.rename(tmp, key)
    return key


def ssh_base_args(port: int, key: Path | None = None) -> list[str]:
    key = key or ensure_ssh_key()
    return ["ssh", "-i", str(key), "-p", str(port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
            "-o", "IdentitiesOnly=yes", "-o", "ServerAliveInterval=5",
            "root@127.0.0.1"]


# ----------------------------------------------------------------- process scan
def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _nspawn_dir(pid: int) -> str | None:
    """If pid is a systemd-nspawn, the -D/--directory it runs."""
    args = _read(f"/proc/{pid}/cmdline").split("\0")
    if not args or not args[0].endswith("systemd-nspawn"):
        return None
    for i, a in enumerate(args):
        if a in ("-D", "--directory") and i + 1 < len(args):
            return os.path.realpath(args[i + 1])
        if a.startswith("--directory="):
            return os.path.realpath(a.split("=", 1)[1])
    return None


_SELF_MNTNS = None


def _container_root(pid: int) -> str | None:
    """For a process inside a container (other mount ns), the host path of its '/'."""
    global _SELF_MNTNS
    if _SELF_MNTNS is None:
        _SELF_MNTNS = os.readlink("/proc/self/ns/mnt")
    try:
        if os.readlink(f"/proc/{pid}/ns/mnt") == _SELF_MNTNS:
            return None
    except OSError:
        return None
    for line in _read(f"/proc/{pid}/mountinfo").splitlines():
        f = line.split()
        if len(f) > 4 and f[4] == "/":
            return f[3] if f[3] != "/" else None
    return None


def processes_of(root_dir: Path) -> list[int]:
    """nspawn processes running root_dir plus every process inside such a container."""
    root = os.path.realpath(root_dir)
    out = []
    for pid in _pids():
        if pid == os.getpid():
            continue
        if _nspawn_dir(pid) == root or _container_root(pid) == root:
            out.append(pid)
    return out


def _listener_pids(port: int) -> list[int]:
    """pids owning a TCP socket listening on `port` (any address)."""
    inodes = set()
    for tbl in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in _read(tbl).splitlines()[1:]:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    pids = []
    if not inodes:
        return pids
    for pid in _pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    pids.append(pid)
                    break
        except OSError:
            continue
    return pids


def _kill_tree_of_root(root_dir: Path, timeout: float = 10.0) -> bool:
    """SIGKILL the container processes of root_dir (inner init first: it takes its
    pid namespace down) and the nspawn processes. Returns True if anything was killed."""
    pids = processes_of(root_dir)
    if not pids:
        return False
    inner = [p for p in pids if _nspawn_dir(p) is None]
    outer = [p for p in pids if p not in inner]
    for p in inner + outer:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + timeout
    while time.time() < deadline and processes_of(root_dir):
        _reap()
        time.sleep(0.2)
    return True


def _reap() -> None:
    with _LOCK:
        for rig in list(_LIVE):
            if rig._proc is not None:
                rig._proc.poll()


def _pid_alive(pid: int) -> bool:
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


# ----------------------------------------------------------------- Rig
_LIVE: list["Rig"] = []
_LOCK = threading.RLock()


class Rig:
    def __init__(self, name: str, ssh_port: int, rig_dir: Path, gpus: list[dict] | None = None):
        self.name = name
        self.ssh_port = int(ssh_port)
        self.dir = Path(rig_dir)
        self.root = self.dir / "root"
        self.log_path = self.dir / "nspawn.log"
        self.gpus = gpus or []
        self._proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.last_exit: int | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------ create
    @classmethod
    def create(cls, name: str, ssh_port: int, gpus: list[dict], *, base_dir: Path | str | None = None,
               authorized_key: str | None = None) -> "Rig":
        """Fresh rig dir from the cached rootfs. Kills/removes a stale rig of the same
        name or one still holding ssh_port; raises if a non-testbed process holds the port."""
        base = Path(base_dir) if base_dir is not None else cache_dir() / "rigs"
        base.mkdir(parents=True, exist_ok=True)
        rig_dir = base / name
        template = ensure_rootfs()
        key = ensure_ssh_key()
        if authorized_key is None:
            authorized_key = Path(str(key) + ".pub").read_text()

        # stale containers: same dir, or anything of ours on the port
        if _kill_tree_of_root(rig_dir / "root"):
            log(f"killed stale container in {rig_dir}")
        _free_port_from_stale_rigs(ssh_port)
        if port_in_use(ssh_port) or _listener_pids(ssh_port):
            raise RuntimeError(f"ssh port {ssh_port} is in use by a non-testbed process on this host")

        t0 = time.time()
        if rig_dir.exists():
            rmtree(rig_dir)
        tmp = base / f".{name}.tmp-{os.getpid()}"
        if tmp.exists():
            rmtree(tmp)
        tmp.mkdir()
        run(["cp", "-a", "--reflink=auto", template, tmp / "root"])
        gpus = complete_gpus(gpus, name)
        root = tmp / "root"
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        (root / "etc/hostname").write_text(name + "\n")
        hosts = root / "etc/hosts"
        hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
        (root / "etc/ssh/sshd_config.d/20-testbed-rig.conf").write_text(
            f"Port {int(ssh_port)}\nListenAddress 127.0.0.1\n")
        ak = root / "root/.ssh/authorized_keys"
        ak.parent.mkdir(mode=0o700, exist_ok=True)
        ak.write_text(authorized_key.strip() + "\n")
        ak.chmod(0o600)
        gdir = root / "etc/llamarig-testbed"
        gdir.mkdir(parents=True, exist_ok=True)
        (gdir / "gpus.json").write_text(json.dumps(gpus, indent=2) + "\n")
        install_fake_smi(root)
        (tmp / RIG_MARKER).write_text(json.dumps({"name": name, "ssh_port": int(ssh_port), "gpus": gpus}, indent=2))
        tmp.rename(rig_dir)
        rig = cls(name, ssh_port, rig_dir, gpus)
        rig.timings["create"] = time.time() - t0
        return rig

    @classmethod
    def load(cls, rig_dir: Path | str) -> "Rig":
        """Re-attach to a rig created earlier (e.g. by `python -m testbed up`)."""
        rig_dir = Path(rig_dir)
        meta = json.loads((rig_dir / RIG_MARKER).read_text())
        rig = cls(meta["name"], meta["ssh_port"], rig_dir, meta.get("gpus"))
        pid = meta.get("pid")
        if pid and _nspawn_dir(pid) == os.path.realpath(rig.root):
            rig.pid = pid
        return rig

    def _save_meta(self) -> None:
        meta_p = self.dir / RIG_MARKER
        meta = json.loads(meta_p.read_text())
        meta["pid"] = self.pid
        meta_p.write_text(json.dumps(meta, indent=2))

    # ------------------------------------------------------------ lifecycle
    @property
    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self.pid is not None and _pid_alive(self.pid) and _nspawn_dir(self.pid) == os.path.realpath(self.root)

    def _start_nspawn(self) -> None:
        ccache = cache_dir() / "ccache"
        ccache.mkdir(parents=True, exist_ok=True)
        ccache.chmod(0o777)
        logf = open(self.log_path, "ab")
        logf.write(f"\n===== testbed: boot {time.strftime('%F %T')} =====\n".encode())
        logf.flush()
        cmd = ["systemd-nspawn", "-D", str(self.root), "-b", "--register=no", "--keep-unit",
               "-M", self.name, "--console=read-only", f"--bind={ccache}:/var/cache/ccache"]
        env = dict(os.environ, SYSTEMD_NSPAWN_LOCK="0")
        # setsid: own session/process group, immune to the test runner's Ctrl-C
        self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env, cwd=str(self.dir))
        logf.close()
        self.pid = self._proc.pid
        self._save_meta()
        with _LOCK:
            if self not in _LIVE:
                _LIVE.append(self)

    def boot(self, timeout: float = BOOT_TIMEOUT) -> "Rig":
        if self.is_running:
            return self
        t0 = time.time()
        self._start_nspawn()
        self.wait_ready(timeout)
        self.timings["boot"] = time.time() - t0
        return self

    def wait_ready(self, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            if not self.is_running:
                raise RuntimeError(f"rig {self.name}: systemd-nspawn exited "
                                   f"(rc={self._proc.returncode if self._proc else '?'})\n{self.log_tail()}")
            if port_in_use(self.ssh_port):
                try:
                    r = self.ssh("systemctl is-system-running", check=False, timeout=15)
                    last = (r.stdout + r.stderr).strip()
                    if r.stdout.strip() in ("running", "degraded"):
                        if r.stdout.strip() == "degraded":
                            failed = self.ssh("systemctl --failed --no-legend --plain", check=False).stdout
                            log(f"rig {self.name} is degraded: {failed.strip()}")
                        return
                except subprocess.TimeoutExpired:
                    last = "ssh timeout"
            time.sleep(0.5)
        raise RuntimeError(f"rig {self.name} not ready after {timeout:.0f}s (last: {last!r})\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def ssh(self, cmd: str, check: bool = True, *, input: str | None = None,
            timeout: float | None = 600) -> subprocess.CompletedProcess:
        return subprocess.run(ssh_base_args(self.ssh_port) + [cmd], input=input, capture_output=True,
                              text=True, check=check, timeout=timeout)

    def ssh_config(self) -> dict:
        """Connection data for pyinfra/ssh: host, port, user, key file."""
        return {"host": "127.0.0.1", "port": self.ssh_port, "user": "root", "key": str(ensure_ssh_key())}

    def _wait_exit(self, timeout: float) -> int | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._proc is not None:
                rc = self._proc.poll()
                if rc is not None:
                    self.last_exit = rc
                    return rc
            elif not self.is_running:
                return None
            time.sleep(0.2)
        raise TimeoutError

    def stop(self, timeout: float = 60.0) -> None:
        """Clean poweroff; SIGTERM/SIGKILL the container if it does not go in time."""
        if self.is_running:
            try:
                self.ssh("systemctl poweroff --no-block", check=False, timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                self._wait_exit(timeout)
            except TimeoutError:
                log(f"rig {self.name}: poweroff timed out; killing")
                if self.pid:
                    try:
                        os.kill(self.pid, signal.SIGTERM)  # nspawn: clean shutdown request
                    except ProcessLookupError:
                        pass
                try:
                    self._wait_exit(10)
                except TimeoutError:
                    pass
        _kill_tree_of_root(self.root)
        if self._proc is not None:
            try:
                self._proc.wait(5)
                self.last_exit = self._proc.returncode
            except subprocess.TimeoutExpired:
                pass
        with _LOCK:
            if self in _LIVE:
                _LIVE.remove(self)

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> int | None:
        """`systemctl reboot` inside; nspawn exits (133) and is started again.
        Returns nspawn's exit code (None when not our child)."""
        t0 = time.time()
        self.ssh("systemctl reboot --no-block", check=False, timeout=15)
        try:
            rc = self._wait_exit(60)
        except TimeoutError:
            raise RuntimeError(f"rig {self.name}: did not go down for reboot\n{self.log_tail()}")
        if rc not in (None, NSPAWN_REBOOT_RC):
            raise RuntimeError(f"rig {self.name}: nspawn exited {rc} on reboot (expected 133)\n{self.log_tail()}")
        _kill_tree_of_root(self.root)
        self._proc = None
        self._start_nspawn()
        self.wait_ready(timeout)
        self.timings["reboot"] = time.time() - t0
        return rc

    def destroy(self) -> None:
        self.stop()
        rmtree(self.dir)

    def __repr__(self) -> str:
        return f"Rig({self.name!r}, ssh_port={self.ssh_port}, running={self.is_running})"


def _free_port_from_stale_rigs(port: int) -> None:
    """If a testbed container (one whose rootfs dir has a rig.json beside it) still
    listens on `port`, kill it."""
    for pid in _listener_pids(port):
        root = _container_root(pid)
        if root and (Path(root).parent / RIG_MARKER).exists():
            log(f"port {port} held by stale rig container at {root}; killing it")
            _kill_tree_of_root(Path(root))


def stop_all(base_dir: Path | str | None = None, timeout: float = 60.0) -> None:
    """Stop every rig started by this process; with base_dir also kill any container
    (from any process, e.g. an earlier killed run) whose rootfs lies under base_dir."""
    with _LOCK:
        rigs = list(_LIVE)
    threads = [threading.Thread(target=r.stop, kwargs={"timeout": timeout}) for r in rigs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if base_dir is not None:
        base = os.path.realpath(base_dir)
        roots = set()
        for pid in _pids():
            d = _nspawn_dir(pid) or _container_root(pid)
            if d and d.startswith(base + os.sep):
                roots.add(d)
        for d in roots:
            _kill_tree_of_root(Path(d))


atexit.register(stop_all)
