"""A declared unit's settings as a transient unit's properties (``systemd-run --property``).

A candidate runs with exactly the declared unit's user, environment, credentials, directories and
hardening (the same template renders both), with three differences: its own arguments, a loopback
port of its own, and no restarts. Transient units get no specifier expansion from a unit file, so the
specifiers the template uses are expanded here, as systemd expands them for a system service.
"""

from __future__ import annotations

import re

from llamarig.release.unit import API_KEY_ARG

PORT_WORD = "@PORT@"  # the rig program puts a free loopback port here (rig_programs/llamarig-tune.py)

# [Unit] and [Service] settings a transient candidate does not take: its restarts, start limits and install.
DROPPED = {"Restart", "RestartSec", "StartLimitIntervalSec", "StartLimitBurst", "ExecStart", "Description",
           "Wants", "After"}
SPECIFIERS = {"S": "/var/lib", "C": "/var/cache", "t": "/run", "L": "/var/log", "%": "%"}


class TransientError(ValueError):
    pass


def expand(text: str, unit: str) -> str:
    """systemd's specifiers of a system service: %S %C %t %L %d (credentials of ``unit``) %n %%."""
    def one(match: re.Match) -> str:
        letter = match.group(1)
        if letter == "d":
            return f"/run/credentials/{unit}"
        if letter == "n":
            return unit
        if letter in SPECIFIERS:
            return SPECIFIERS[letter]
        raise TransientError(f"specifier %{letter} in a unit setting: not expanded for a transient unit")
    return re.sub(r"%(.)", one, text)


def unit_properties(text: str) -> list[str]:
    """The ``[Service]`` settings of a rendered unit, as properties (specifiers left for ``bind``)."""
    props, section = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        if section != "Service" or key in DROPPED:
            continue
        props.append(f"{key}={value}")
    return props


def bind(properties: list[str], argv: list[str], unit: str) -> tuple[list[str], list[str]]:
    """Properties and argv of candidate unit ``unit``: the properties' specifiers expanded; in argv (words
    as llama-server gets them) only the API key's credential path is a specifier."""
    return ([expand(p, unit) for p in properties],
            [expand(w, unit) if w == API_KEY_ARG else w for w in argv])


def candidate_argv(argv: list[str]) -> list[str]:
    """``argv`` serving on loopback at the rig program's free port: --host 127.0.0.1, --port @PORT@."""
    out, i = [], 0
    while i < len(argv):
        word = argv[i]
        if word in ("--host", "--port") and i + 1 < len(argv):
            i += 2
            continue
        if word.startswith(("--host=", "--port=")):
            i += 1
            continue
        out.append(word)
        i += 1
    return out + ["--host", "127.0.0.1", "--port", PORT_WORD]
