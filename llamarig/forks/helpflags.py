"""The flags an installed llama-server accepts, read from its ``--help``.

Every rendered flag (extra arguments included) is checked against this set
before a unit is written, so a flag the pinned build lacks stops that change
instead of crash-looping the service.

Help formats (both read in the sources): llama.cpp prints each option at
column 0, aliases joined by ", ", then a value hint, then the text at column
40; ik_llama.cpp prints "  %-32s" with hand-written alias strings. ik's help
also leaves out flags its parser accepts, listed here from its
``gpt_params_find_arg`` (common/common.cpp).
"""

from __future__ import annotations

import re
from pathlib import Path

from llamarig.forks.options import ALIASES

_FLAG = re.compile(r"^--?[A-Za-z][A-Za-z0-9_-]*$")

# ik_llama.cpp's --help leaves out flags its parser accepts (--split-mode, --n-predict,
# --override-tensor, ...): for ik the parsed help is joined with the flags of its parser
# at the reference commit, read from its source (llamarig/forks/ik_llama.cpp-flags.txt).
_IK_FLAGS_FILE = Path(__file__).with_name("ik_llama.cpp-flags.txt")


def ik_source_flags() -> set[str]:
    lines = _IK_FLAGS_FILE.read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def parse_help(text: str) -> set[str]:
    """Every flag spelling listed at the start of a --help option line."""
    flags: set[str] = set()
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("-"):
            continue
        for segment in re.split(r"\s{2,}", stripped):
            if not segment.startswith("-"):
                break  # the description column
            for item in segment.split(","):
                word = item.strip().split(" ")[0] if item.strip() else ""
                if _FLAG.match(word):
                    flags.add(word)
    return flags


def accepted_flags(fork: str, help_text: str) -> set[str]:
    flags = parse_help(help_text)
    if fork == "ik_llama.cpp":
        flags |= ik_source_flags()
    # Both parsers read "--a_b" as "--a-b".
    return flags | {f.replace("_", "-") for f in flags if f.startswith("--")}


def unknown_flags(argv: list[str], accepted: set[str]) -> list[str]:
    """Flags of ``argv`` (no program name) the build does not accept, in order."""
    out = []
    for i, word in enumerate(argv):
        if not word.startswith("-") or _is_value(argv, i):
            continue
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            flag = flag.replace("_", "-")
        if flag not in accepted and flag not in out:
            out.append(flag)
    return out


def _is_value(argv: list[str], i: int) -> bool:
    """A word starting with '-' that is the value of the flag before it: a negative number."""
    try:
        float(argv[i])
    except ValueError:
        return False
    return i > 0 and argv[i - 1].startswith("-")


__all__ = ["ALIASES", "accepted_flags", "parse_help", "unknown_flags"]
