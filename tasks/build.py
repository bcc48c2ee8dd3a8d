"""Build the rig's fork at its pinned commit, once per commit and options, and point the stable link at it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files

from llamarig import layout, programs
from llamarig.release.build import build_words

from . import rig_programs
from .util import LiveCommand, progress_env, quote_all


@dataclass(frozen=True)
class Built:
    """The operations that build and switch to the rig's build, and its prefix."""

    ops: tuple
    prefix: str


class InstalledBuild(FactBase):
    """The build record of a complete prefix (its record file, JSON), or None."""

    def command(self, prefix, targets):
        record = shlex.quote(f"{prefix}/{layout.BUILD_RECORD}")
        # a target NAME|OTHER is installed as NAME (rig_programs/llamarig-build.sh)
        checks = " && ".join(f"test -x {shlex.quote(prefix + '/bin/' + t.split('|')[0])}" for t in targets)
        return f"if {checks} && test -f {record}; then cat {record}; fi"

    def process(self, output):
        text = "\n".join(output).strip()
        try:
            return json.loads(text) if text else None
        except ValueError:
            return None


@operation()
def llama_build(plan: dict, jobs: int | None, ccache_dir: str | None, script: str):
    """
    Build and install one commit of llama.cpp or ik_llama.cpp into its own prefix.

    + plan: the release's build plan (``llamarig.release.build.build_plan``: key, commit, url, paths,
      cmake arguments, targets, and the record the prefix gets)
    + jobs: compile jobs, None for the rig's CPU count
    + ccache_dir: CCACHE_DIR on the rig, or None
    + script: path of the installed llamarig-build.sh

    Does nothing when the prefix already holds a complete build of these targets.

    **Example:**

    .. code:: python

        llama_build(name="Build", plan=release.build, jobs=None, ccache_dir="/var/cache/ccache", script=path)
    """
    if host.get_fact(InstalledBuild, prefix=plan["prefix"], targets=plan["targets"]) is not None:
        host.noop(f"{plan['prefix']} is already built")
        return
    env = f"CCACHE_DIR={shlex.quote(ccache_dir)} " if ccache_dir else ""
    yield LiveCommand(progress_env() + env + quote_all(build_words(plan, script, jobs)))


@deploy("Build")
def apply(deployment):
    doc, plan = deployment.doc, deployment.release.build
    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in doc["build_packages"] if p not in installed]
    if missing:
        apt.packages(name="Install build dependencies", packages=missing, update=True, no_recommends=True)
    script = rig_programs.install(doc, programs.BUILD)
    built = llama_build(name=f"Build {doc['build_fork']} {plan['commit'][:12]} ({deployment.release.facts.describe()})",
                        plan=plan, jobs=doc["build_jobs"], ccache_dir=doc["build_ccache_dir"], script=script)
    link = files.link(name=f"Use build {plan['key']}", path=plan["link"], target=plan["prefix"], symbolic=True)
    return Built(ops=(built, link), prefix=plan["prefix"])
