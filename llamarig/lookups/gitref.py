"""Resolve a git ref (branch, tag or commit) of a remote to a commit, on the controller."""

from __future__ import annotations

import re
import subprocess

_HEX40 = re.compile(r"^[0-9a-f]{40}$")


class GitRefError(Exception):
    pass


_cache: dict[tuple[str, str], str] = {}


def resolve_ref(url: str, ref: str, timeout: float = 60) -> str:
    """The commit ``ref`` names in the repository at ``url`` (a 40-hex ref is returned as is)."""
    if _HEX40.match(ref):
        return ref
    if (url, ref) in _cache:
        return _cache[(url, ref)]
    try:
        out = subprocess.run(["git", "ls-remote", url, ref, f"refs/tags/{ref}^{{}}"],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitRefError(f"git ls-remote failed: {exc}") from None
    if out.returncode != 0:
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith("fatal:")]
        reason = (fatal or lines or [f"exit status {out.returncode}"])[0]
        raise GitRefError(f"git ls-remote failed: {reason}")
    refs = {}
    for line in out.stdout.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    for name in (f"refs/tags/{ref}^{{}}", f"refs/tags/{ref}", f"refs/heads/{ref}", ref):
        if name in refs:
            _cache[(url, ref)] = refs[name]
            return refs[name]
    if re.match(r"^[0-9a-f]{7,39}$", ref):
        raise GitRefError("an abbreviated commit cannot be resolved remotely; give all 40 hex digits")
    raise GitRefError("no such branch or tag")
