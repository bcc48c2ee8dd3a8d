"""Which build each candidate runs on: the serving one, or one of the rig's ``tune_forks``, resolved as a
deploy resolves it (git and the Hub looked up, the lock reused, the rig's own build facts)."""

from __future__ import annotations

import dataclasses
import json

from llamarig.tune.candidates import fork_keys


BUILD_KEYS = ("build_fork", "build_git_url", "build_ref", "build_cmake_options", "build_targets")


def build_of(doc: dict) -> tuple:
    return tuple(json.dumps(doc[k], sort_keys=True) for k in BUILD_KEYS)


def other_builds(host: str, doc: dict, locks, say, rig_facts=None) -> dict:
    """The release of every ``tune_forks`` build: {build: (lookups, build plan) or the problem}."""
    from llamarig.release.assemble import assumed_facts, facts_from_lock, make_release
    from llamarig.release.resolve import LockUse, resolve_rig
    from llamarig.hostdata.validate import validate_host

    look = tune_lookups()
    path, entries = locks
    entry = entries.get(host) if entries is not None else None
    out = {}
    for item in doc["tune_forks"]:
        other = {**doc, **fork_keys(doc, item)}
        name = f"tune_forks {item['build_fork']} {item['build_ref']}"
        normalized, problems = validate_host(host, other)
        if problems:
            out[build_of(other)] = f"{name}: " + "; ".join(f"{p.path}: {p.expected}" for p in problems[:3])
            continue
        use = LockUse(path, entry, mode="reuse") if entry is not None else None
        rig, problems = resolve_rig(host, normalized, look, use, preview=False, check_explicit=True)
        if rig is None:
            out[build_of(other)] = f"{name}: " + "; ".join(getattr(p, "expected", str(p)) for p in problems[:3])
            continue
        facts = rig_facts or (facts_from_lock(entry) if entry is not None else assumed_facts(normalized)[0])
        out[build_of(other)] = (look, make_release(rig, facts).build)
        say(f"{name}: commit {rig.commit[:12]}, build {out[build_of(other)][1]['key']}")
    return out


def tune_lookups():
    """The resolver's lookups for a tune: git and the Hub as a deploy asks them (a candidate must name the very
    build prefix and model directory the rig has), and no API key read on the controller (the rig program reads
    the root-only file the deploy installed)."""
    from llamarig.release.resolve import real_lookups
    look = real_lookups()
    memo: dict = {}

    def git_ref(url, ref, _real=look.git_ref):  # one ls-remote per build, not per candidate
        if (url, ref) not in memo:
            memo[(url, ref)] = _real(url, ref)
        return memo[(url, ref)]

    return dataclasses.replace(look, git_ref=git_ref, api_key=lambda service: None)
