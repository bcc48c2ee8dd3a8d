"""Where things live on a rig, derived from validated host data.

One place for every path so that tasks, templates and tests agree. Paths that
depend on a build are the same on every rig for the same commit and options,
so one shared ccache serves all of them.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re

_SPLIT = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def build_key(fork: str, commit: str, cmake_args: list[str], targets: list[str]) -> str:
    """Name of one build: fork, commit and a digest of everything that changes the binaries."""
    digest = hashlib.sha256(json.dumps({"cmake": cmake_args, "targets": sorted(targets)}).encode()).hexdigest()
    return f"{fork}-{commit[:12]}-{digest[:10]}"


def source_dir(root: str, fork: str) -> str:
    return posixpath.join(root, "src", fork)


def worktree_dir(root: str, fork: str, commit: str) -> str:
    return posixpath.join(root, "work", f"{fork}-{commit[:12]}")


def build_dir(root: str, key: str) -> str:
    return posixpath.join(root, "build", key)


def prefix_dir(root: str, key: str) -> str:
    return posixpath.join(root, "builds", key)


def current_link(root: str, fork: str) -> str:
    """Stable path of the fork's newest build (a symlink to its prefix), for people: units name the prefix."""
    return posixpath.join(root, fork)


def server_binary(prefix: str) -> str:
    """llama-server of the build at ``prefix`` (units name the prefix, never the stable link)."""
    return posixpath.join(prefix, "bin", "llama-server")


def model_dir(models_dir: str, name: str) -> str:
    """Directory of all revisions of model ``name``."""
    return posixpath.join(models_dir, name)


def revision_label(revision: str) -> str:
    """Directory name of one revision: the commit's first 12 hex digits (a name, such as main, until resolved)."""
    return revision[:12] if re.fullmatch(r"[0-9a-f]{40}", revision) else revision


def model_revision_dir(models_dir: str, name: str, revision: str) -> str:
    """Where one revision of a model lives. A new revision is fetched beside the old one, which keeps
    serving (and stays there for a rollback) until the new unit has answered."""
    return posixpath.join(model_dir(models_dir, name), revision_label(revision))


def model_path(models_dir: str, name: str, revision: str, file: str) -> str:
    return posixpath.join(model_revision_dir(models_dir, name, revision), file)


UNIT_DIR = "/etc/systemd/system"
STATE_DIR = "/var/lib/llamarig"
KNOWN_GOOD_DIR = posixpath.join(STATE_DIR, "known-good")
EXPECT_DIR = posixpath.join(STATE_DIR, "expect")
CONFIG_DIR = "/etc/llamarig"
HUB_TOKEN_FILE = posixpath.join(CONFIG_DIR, "hub-token")
# A model revision directory's record of its verified files (written by the rig's downloader).
MANIFEST = ".llamarig-manifest.json"
# A complete build prefix's record of what it was built from (written by the rig's build script).
BUILD_RECORD = ".llamarig-build.json"


def service_home(service_name: str) -> str:
    """HOME of a service's server (its StateDirectory=, llamarig/NAME under /var/lib)."""
    return posixpath.join(STATE_DIR, service_name)


def unit_path(unit: str) -> str:
    return posixpath.join(UNIT_DIR, unit)


def expectation_file(unit: str) -> str:
    """What the live check of ``unit`` must find (JSON, written by the deploy, read by llamarig-check.py)."""
    return posixpath.join(EXPECT_DIR, unit + ".json")


def known_good_record(unit: str) -> str:
    """The last unit text of ``unit`` that answered its check, and its URL (JSON): what a rollback restores."""
    return posixpath.join(KNOWN_GOOD_DIR, unit + ".json")


def service_url(service: dict) -> str:
    """Where a service answers on its own rig (it may bind loopback only): its bind address, or loopback."""
    bind = service["host"]
    address = "127.0.0.1" if bind in (None, "0.0.0.0", "127.0.0.1", "localhost") else "::1" if bind == "::" else bind
    return f"http://{host_port(address, service['port'])}"


def host_port(address: str, port: int) -> str:
    """ADDRESS:PORT, an IPv6 address in brackets ([fd00::2]:50052)."""
    if ":" in address and not address.startswith("["):
        address = f"[{address}]"
    return f"{address}:{port}"


def unit_name(service_name: str) -> str:
    return f"llamarig-{service_name}.service"


def rpc_unit_name(server_name: str) -> str:
    """The unit of one of a rig's rpc_servers (llama.cpp's rpc-server)."""
    return f"llamarig-rpc-{server_name}.service"


def rpc_binary(prefix: str) -> str:
    return posixpath.join(prefix, "bin", "rpc-server")


def rpc_home(server_name: str) -> str:
    """HOME of an rpc-server (its StateDirectory=)."""
    return posixpath.join(STATE_DIR, f"rpc-{server_name}")


def rpc_cache(server_name: str) -> str:
    """Where an rpc-server keeps its tensor cache: $LLAMA_CACHE/rpc, LLAMA_CACHE being its CacheDirectory=."""
    return posixpath.join("/var/cache/llamarig", f"rpc-{server_name}", "rpc")


CREDENTIALS_DIR = posixpath.join(CONFIG_DIR, "credentials")


def api_key_file(service_name: str) -> str:
    """Root-only file on the rig holding a service's API key (read by systemd's LoadCredential=)."""
    return posixpath.join(CREDENTIALS_DIR, f"{service_name}.api-key")


# ``llamarig tune``: its state and programs on the rig live in /run (gone at a reboot, which the boot units
# answer: the power unit sets the declared limits, the declared services start).
TUNE_DIR = "/run/llamarig/tune"


def tune_prefix(service_name: str) -> str:
    """The name every transient unit of a service's tune starts with (candidates and the guard)."""
    return f"llamarig-tune-{service_name}"


def tune_guard_unit(service_name: str) -> str:
    return f"{tune_prefix(service_name)}-guard.service"


def tune_candidate_unit(service_name: str, candidate: str) -> str:
    return f"{tune_prefix(service_name)}-{candidate}.service"


def libexec(root: str, name: str) -> str:
    """Where a rig program (``rig_programs/NAME``) is installed on the rig."""
    return posixpath.join(root, "libexec", name)


def hub_venv(root: str) -> str:
    """The virtual environment on the rig holding the Hub client the downloader uses."""
    return posixpath.join(root, "venv")


def split_siblings(file: str) -> list[str]:
    """All files of the split set ``file`` belongs to (itself alone when not split)."""
    match = _SPLIT.match(file)
    if not match:
        return [file]
    count = int(match.group("count"))
    return [f"{match.group('prefix')}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def pick_model_file(paths: list[str]) -> str | None:
    """The GGUF to pass to --model among a repository's selected files.

    The first part of a split set, or the single GGUF. None when the files hold
    no GGUF or more than one model (the caller reports that).
    """
    ggufs = sorted(p for p in paths if p.endswith(".gguf") and "mmproj" not in posixpath.basename(p).lower())
    firsts = []
    singles = []
    for path in ggufs:
        match = _SPLIT.match(path)
        if match:
            if int(match.group("no")) == 1:
                firsts.append(path)
        else:
            singles.append(path)
    candidates = firsts + singles
    return candidates[0] if len(candidates) == 1 else None
