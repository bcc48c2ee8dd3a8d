"""Debian bookworm rootfs for the nspawn rigs, cached at $CACHE/rootfs."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .common import cache_dir, clean_stale_tmp, log, rmtree, run, tmp_sibling, which

RECIPE_VERSION = 1
SUITE = "bookworm"
PACKAGES = [
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo",
    "build-essential", "cmake", "git", "ccache", "python3-venv", "ca-certificates",
    "curl", "procps", "iproute2",
]
HF_HUB_VERSION = "2.4.0"
VENV = "/opt/llamarig/venv"
FAKE_SMI_SRC = Path(__file__).with_name("fake_nvidia_smi.py")
# Units that have nothing to do in a container sharing the host network/kernel.
MASK_UNITS: list[str] = []


def rootfs_path() -> Path:
    return cache_dir() / "rootfs"


def host_mirror() -> str:
    """The Debian mirror configured on this host (falls back to deb.debian.org)."""
    texts = []
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            texts.append(f.read_text())
        except OSError:
            pass
    for text in texts:
        for m in re.finditer(r"(?:^deb\s+(?:\[[^\]]*\]\s+)?|^URIs:\s*)(\S+)", text, re.M):
            uri = m.group(1).rstrip("/")
            if re.search(r"/debian$", uri) and "security" not in uri:
                return uri
    return "http://deb.debian.org/debian"


def _chroot(root: Path, *cmd: str, **kw) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "HOME": "/root", "DEBIAN_FRONTEND": "noninteractive"}
    return run(["chroot", str(root), *cmd], env=env, **kw)


def _hfhub_wheels() -> Path:
    """huggingface_hub and its deps as wheels for cp311/x86_64, via the host's pip."""
    d = cache_dir() / "dl" / f"wheels-huggingface_hub-{HF_HUB_VERSION}"
    if (d / ".complete").exists():
        return d
    clean_stale_tmp(d)
    tmp = tmp_sibling(d)
    tmp.mkdir(parents=True)
    run([sys.executable, "-m", "pip", "download", "-q", "-d", tmp,
         f"huggingface_hub=={HF_HUB_VERSION}", "--only-binary", ":all:",
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
         "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
         "--platform", "manylinux_2_28_x86_64", "--platform", "any"])
    (tmp / ".complete").write_text("ok\n")
    if d.exists():
        rmtree(d)
    tmp.rename(d)
    return d


def install_fake_smi(root: Path) -> None:
    dst = Path(root) / "usr/local/bin/nvidia-smi"
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(".nvidia-smi.tmp")
    shutil.copyfile(FAKE_SMI_SRC, tmp)
    tmp.chmod(0o755)
    tmp.rename(dst)


def _configure(root: Path) -> dict:
    # python venv with huggingface_hub (wheels fetched by the host, installed offline)
    wheels = _hfhub_wheels()
    wdir = root / "tmp/testbed-wheels"
    shutil.copytree(wheels, wdir, dirs_exist_ok=True)
    _chroot(root, "python3", "-m", "venv", VENV)
    _chroot(root, f"{VENV}/bin/pip", "install", "-q", "--no-index", "--find-links",
            "/tmp/testbed-wheels", f"huggingface_hub=={HF_HUB_VERSION}")
    rmtree(wdir)

    # ssh: key-only root login; per-rig Port/ListenAddress go to testbed-rig.conf
    conf = root / "etc/ssh/sshd_config.d/10-testbed.conf"
    conf.write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                    "KbdInteractiveAuthentication no\nUseDNS no\n")
    _chroot(root, "systemctl", "enable", "ssh.service")
    # root: no usable password ('*' in shadow from debootstrap) -> lock explicitly
    _chroot(root, "passwd", "-l", "root", capture_output=True)
    (root / "root/.ssh").mkdir(mode=0o700, exist_ok=True)

    # machine-id: leave empty in the template; Rig.create writes a unique one per rig
    # (an empty/missing file would make systemd treat every boot as first boot).
    (root / "etc/machine-id").write_text("")
    dbus_mid = root / "var/lib/dbus/machine-id"
    if dbus_mid.exists() or dbus_mid.is_symlink():
        dbus_mid.unlink()
    dbus_mid.parent.mkdir(parents=True, exist_ok=True)
    dbus_mid.symlink_to("/etc/machine-id")

    # shared ccache (bind-mounted from $CACHE/ccache by Rig.boot)
    (root / "etc/ccache.conf").write_text("cache_dir = /var/cache/ccache\numask = 002\n")
    (root / "var/cache/ccache").mkdir(parents=True, exist_ok=True)
    (root / "etc/llamarig-testbed").mkdir(parents=True, exist_ok=True)

    for unit in MASK_UNITS:
        _chroot(root, "systemctl", "mask", unit)
    # keep the journal small
    jd = root / "etc/systemd/journald.conf.d"
    jd.mkdir(parents=True, exist_ok=True)
    (jd / "testbed.conf").write_text("[Journal]\nSystemMaxUse=32M\n")

    install_fake_smi(root)

    def out(*cmd):
        return _chroot(root, *cmd, capture_output=True, text=True).stdout.strip()

    return {
        "recipe_version": RECIPE_VERSION,
        "suite": SUITE,
        "debian_version": (root / "etc/debian_version").read_text().strip(),
        "systemd": out("dpkg-query", "-W", "-f=${Version}", "systemd"),
        "openssh_server": out("dpkg-query", "-W", "-f=${Version}", "openssh-server"),
        "python3": out("python3", "--version"),
        "cmake": out("dpkg-query", "-W", "-f=${Version}", "cmake"),
        "gcc": out("dpkg-query", "-W", "-f=${Version}", "gcc"),
        "huggingface_hub": out(f"{VENV}/bin/python", "-c",
                               "import huggingface_hub as h; print(h.__version__)"),
        "packages": PACKAGES,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def rootfs_info() -> dict | None:
    marker = rootfs_path() / ".testbed-complete"
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def ensure_rootfs() -> Path:
    """Build (once) and return the template rootfs. Idempotent; survives interrupts."""
    final = rootfs_path()
    info = rootfs_info()
    if info and info.get("recipe_version") == RECIPE_VERSION:
        install_fake_smi(final)  # cheap; keeps the fake in step with the source tree
        return final
    which("debootstrap")
    clean_stale_tmp(final)
    tmp = tmp_sibling(final)
    mirror = host_mirror()
    t0 = time.time()
    log(f"debootstrap {SUITE} into {tmp} from {mirror} (several minutes)")
    run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
         SUITE, tmp, mirror], stdout=subprocess.DEVNULL if not os.environ.get("TESTBED_VERBOSE") else None)
    log(f"debootstrap done in {time.time() - t0:.0f}s; configuring")
    info = _configure(tmp)
    info["mirror"] = mirror
    info["build_seconds"] = round(time.time() - t0)
    (tmp / ".testbed-complete").write_text(json.dumps(info, indent=2) + "\n")
    if final.exists():
        rmtree(final)
    tmp.rename(final)
    log(f"rootfs ready at {final} ({info['build_seconds']}s)")
    return final
