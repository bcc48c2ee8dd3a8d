"""Which build each candidate runs on: the serving one, or one of the rig's ``tune_forks``, resolved as a
deploy resolves it (git and the Hub looked up, the lock reused, the rig's own build facts)."""

from __future__ import annotations

import dataclasses
import json

from llamarig.tune.candidates import fork_keys


BUILD_KEYS = ("build_fork", "build_git_url", "build_ref", "build_cmake_options", "build_targets")


def build_of(doc: dict) -> tuple:
    return tuple(json.dumps(doc[k], sort_keys=True) for k in BUILD_KEYS)


def other_builds(host: str, doc: dict, locks, lookups, say, rig_facts=None) -> dict:
    """The build plan of every ``tune_forks`` build: {build: the plan, or the problem in words}."""
    from llamarig.tune.prepare import release_for

    out = {}
    for item in doc["tune_forks"]:
        other = {**doc, **fork_keys(doc, item)}
        name = f"tune_forks {item['build_fork']} {item['build_ref']}"
        rig, release, problem = release_for(host, other, locks, lookups, rig_facts, check_explicit=True)
        out[build_of(other)] = f"{name}: {problem}" if problem else release.build
        if not problem:
            say(f"{name}: commit {rig.commit[:12]}, build {release.build['key']}")
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
