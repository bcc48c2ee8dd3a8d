"""A problem in host data, as one line: the host, the key path, the value as written (secrets masked) and what was expected."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


_MISSING = object()


@dataclass(frozen=True)
class Problem:
    host: str
    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        shown = "(missing)" if self.value is _MISSING else _short(repr(self.value))
        return f"{self.host}: {self.path} = {shown}: expected {self.expected}"


class Key(str):
    """A mapping's key shown as one (the value of a problem about the key itself)."""

    def __repr__(self) -> str:
        return f"key {str.__repr__(self)}"


class Masked(str):
    """A value whose secret part is replaced, shown as written."""

    def __repr__(self) -> str:
        return str(self)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 5] + " ...]" if text.endswith("]") else text[:limit - 4] + " ..."


def format_path(parts) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int) and out:
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def format_problems(problems: list[Problem]) -> str:
    lines = [f"llamarig: {len(problems)} problem(s) in the host data:"]
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)
