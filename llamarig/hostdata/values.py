"""Checks of single values that the data alone decides: what a deploy would refuse later, refused by ``llamarig check``.

Each check returns None when the value is fine, or the words of what was expected.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import urllib.parse

# Characters that would break a unit file, a command line or a file on the rig: C0 controls, DEL, and the
# line and paragraph separators some tools split on.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def control_character(value: str) -> str | None:
    found = _CONTROL.search(value)
    if found is None:
        return None
    return (f"a string without control characters (it holds {found.group()!r} at position {found.start()}: "
            f"such a character would break the unit file or the command line the value is written into)")


# Real CUDA compute capabilities (nvcc's -arch list, up to CUDA 13), as CMake writes them.
CUDA_ARCHS = ("50", "52", "53", "60", "61", "62", "70", "72", "75", "80", "86", "87", "88", "89", "90",
              "100", "101", "103", "110", "120", "121")
_ARCH = re.compile(r"(?P<n>\d{2,3})(?P<suffix>[af]?)(-real|-virtual)?")


_ARCH_SPELLING = re.compile(r"(?:sm_|compute_)?(\d{1,2})\.?(\d)(?P<suffix>[af]?)", re.I)


def cuda_architecture(value) -> str | None:
    m = _ARCH.fullmatch(str(value)) if not isinstance(value, bool) else None
    if m and m.group("n") in CUDA_ARCHS:
        return None
    words = ("a CUDA architecture nvcc knows, such as 86 (RTX 30xx), 89 (RTX 40xx), 90 (H100) or 120 (RTX 50xx): "
             + ", ".join(CUDA_ARCHS))
    spelled = _ARCH_SPELLING.fullmatch(str(value)) if not isinstance(value, bool) else None
    if spelled and spelled.group(1) + spelled.group(2) in CUDA_ARCHS:  # 8.6, "sm_86": CMake writes 86
        arch = spelled.group(1) + spelled.group(2) + spelled.group("suffix").lower()
        return f"{words} (write {arch if spelled.group('suffix') else int(arch)!r}, as CMake does)"
    if value == "auto":
        return f"{words} (auto is written alone, without a list: 'auto')"
    return words


_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def bind_address(value: str) -> str | None:
    """An address llama-server can bind: IPv4, IPv6 or a host name, never with a port."""
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if re.fullmatch(r"[\d.]+:\d+|\[[0-9A-Fa-f:.]+\]:\d+|[A-Za-z0-9.-]+:\d+", value):
        return "an address without a port (the port is the `port` key)"
    if value.startswith("[") and value.endswith("]"):
        return "an IPv6 address without brackets, such as :: or ::1"
    if re.fullmatch(r"[\d.]+", value):
        return "an IPv4 address such as 0.0.0.0, 127.0.0.1 or 192.168.1.50 (four numbers from 0 to 255)"
    labels = value.rstrip(".").split(".")
    if value and all(_LABEL.fullmatch(label) for label in labels) and not labels[-1].isdigit():
        return None
    return "an IP address (0.0.0.0, 127.0.0.1, ::) or a host name"


PRIVILEGED_PORTS = 1024


def service_port(value: int) -> str | None:
    if value < PRIVILEGED_PORTS:
        return (f"a port from {PRIVILEGED_PORTS} to 65535 (the server runs as an unprivileged user without "
                f"capabilities: it cannot bind below {PRIVILEGED_PORTS})")
    return None


# What any GPU accepts: the smallest consumer card's floor is about 100 W, the largest datacenter parts 1.2 kW.
POWER_RANGE_W = (20, 1500)


def power_limit(value) -> str | None:
    low, high = POWER_RANGE_W
    if not low <= value <= high:
        return f"watts from {low} to {high} (no GPU accepts {value:g} W; the card's own range is checked on the rig)"
    return None


_NULL_WORDS = ("none", "null", "nil", "~")


def not_null_word(value: str) -> str | None:
    """A nullable key given the word None as a string (a host named 'None', a key file named 'null')."""
    if value.strip().lower() in _NULL_WORDS:
        return f"null (Python None, not the string {value!r})"
    return None


def extra_arg(value: str) -> str | None:
    if value == "":
        return "a non-empty argument"
    if value != value.strip():
        return "an argument without leading or trailing spaces"
    if value.startswith("-") and re.search(r"\s", value) and "=" not in value.split()[0]:
        flag, _, rest = value.partition(" ")
        return f"one word per item: write {[flag, rest.strip()]!r} (or {flag}={rest.strip()})"
    return None


_REF_FORBIDDEN = re.compile(r"[\s~^:?*\[\\]|\.\.|@\{|//")


def git_ref(value: str) -> str | None:
    """A name git accepts for a branch, a tag or a commit (git check-ref-format's rules)."""
    if (_REF_FORBIDDEN.search(value) or value.startswith(("-", "/", ".")) or value.endswith(("/", ".", ".lock"))
            or value == "@" or "/." in value):
        return ("a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', "
                "'\\', and not starting with '-' or '.')")
    return None


_HUB_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


def hub_repo(value: str) -> str | None:
    """OWNER/NAME as huggingface_hub's validate_repo_id takes it (model_info refuses the others)."""
    parts = value.split("/")
    if (len(parts) == 2 and all(_HUB_PART.fullmatch(part) for part in parts) and "--" not in value
            and ".." not in value and not value.endswith(".git")):
        return None
    return ("a Hub repository OWNER/NAME such as unsloth/GLM-4.7-GGUF (letters, digits, '-', '_', '.'; "
            "no '--' or '..', neither part starting or ending with '-' or '.', not ending in .git)")


def relative_path(value: str) -> str | None:
    """A path inside a repository: relative, '/'-separated, never leaving it."""
    parts = value.split("/")
    if value.startswith("/") or "\\" in value or ".." in parts or "" in parts[:-1] or value.endswith("/"):
        return "a path inside the repository such as UD-IQ1_M/model-00001-of-00003.gguf (relative, no '..')"
    return None


def absolute_path(value: str) -> str | None:
    if not value.startswith("/") or posixpath.normpath(value) != value or re.search(r"\s", value):
        return "an absolute path such as /opt/llamarig, without '..', '//', a trailing '/' or spaces"
    if value == "/":
        return "a directory below / (llamarig writes into it)"
    if not re.fullmatch(r"[A-Za-z0-9._/+@,=:-]+", value):
        # unit settings such as ReadOnlyPaths= read % specifiers, quotes and backslashes themselves
        return "a path of letters, digits and . _ - + @ , = : / (a unit would read %, $, quotes or backslashes as its own syntax)"
    return None


_SCP = re.compile(r"[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+")


def git_url(value: str) -> str | None:
    if re.search(r"\s", value):
        return "a git URL without spaces"
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme in ("https", "http", "git", "ssh") and parsed.netloc and parsed.path not in ("", "/"):
        return None
    if parsed.scheme == "file" and parsed.path.startswith("/"):
        return None
    if _SCP.fullmatch(value) or (value.startswith("/") and absolute_path(value) is None):
        return None
    return "a git URL such as https://github.com/ggml-org/llama.cpp, git@host:owner/repo.git or an absolute path"


def http_url(value: str) -> str | None:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme in ("http", "https") and parsed.hostname and not re.search(r"\s", value):
        try:
            parsed.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            return "an http:// or https:// URL with a numeric port"
        return None
    return "an http:// or https:// URL such as https://huggingface.co"


def pip_requirement(value: str, name: str) -> str | None:
    from packaging.requirements import InvalidRequirement, Requirement
    try:
        req = Requirement(value)
    except InvalidRequirement:  # packaging's own words span lines and point at a column
        return f"a pip requirement such as '{name}>=1.0,<3'"
    if req.name.lower().replace("-", "_") != name:
        return f"a requirement of {name}, such as '{name}>=1.0,<3'"
    return None


_DEB = re.compile(r"[a-z0-9][a-z0-9+.-]+")


def debian_package(value: str) -> str | None:
    if _DEB.fullmatch(value):
        return None
    words = "a Debian package name such as build-essential (lower case letters, digits, '+', '-', '.')"
    if re.fullmatch(r"[a-z0-9][a-z0-9+.-]+[=:].*", value):  # tasks/build.py compares names with dpkg's
        return words[:-1] + "; no version or architecture)"
    guess = re.sub(r"[\s_]+", "-", value.strip().lower())
    return words + (f" (did you mean {guess}?)" if _DEB.fullmatch(guess) else "")


# What llamarig sets in every unit, and what llama-server reads as flags or secrets: never from `environment`.
MANAGED_ENV = {
    "CUDA_VISIBLE_DEVICES": "the service's `gpus` (llamarig sets it from them, in PCI bus order)",
    "CUDA_DEVICE_ORDER": "nothing: llamarig sets PCI_BUS_ID so CUDA's numbers match nvidia-smi's",
    "CUDA_CACHE_PATH": "nothing: llamarig points it at the unit's own cache directory",
    "HOME": "nothing: llamarig sets it to the service's state directory",
    "HF_TOKEN": "hub_token_env or hub_token_file (a token in the unit is readable by every local user)",
    "HUGGING_FACE_HUB_TOKEN": "hub_token_env or hub_token_file (a token in the unit is readable by every local user)",
    "LLAMA_API_KEY": "api_key_env or api_key_file (a key in the unit is readable by every local user)",
    "CREDENTIALS_DIRECTORY": "nothing: systemd sets it for LoadCredential=",
}


def environment_key(key: str) -> str | None:
    if key in MANAGED_ENV:
        return f"a variable llamarig does not manage: for {key} use {MANAGED_ENV[key]}"
    if key.startswith("LLAMA_ARG_"):
        return (f"a variable llama-server does not read as a flag: {key} would set a flag behind llamarig's back; "
                f"use the service's own key for it, or extra_args")
    return None
