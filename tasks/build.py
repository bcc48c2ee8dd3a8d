"""Build the rig's fork at its pinned commit, once per commit and options, and point the stable link at it."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, server

from llamarig import layout
from llamarig.release.build import NVCC_LOOKUP, build_plan, cuda_architectures

from .power import GpuState
from .util import fail_command, quote_all

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class Built:
    """The operations that build and switch to the rig's build, and its prefix."""

    ops: tuple
    prefix: str


class NvccPath(FactBase):
    """Path of nvcc on the rig, or None."""

    def command(self):
        return NVCC_LOOKUP

    def process(self, output):
        lines = [line for line in output if line.strip()]
        return lines[0].strip() if lines else None


class InstalledBuild(FactBase):
    """The build record of a complete prefix (its .llamarig-build.json), or None."""

    def command(self, prefix, targets):
        checks = " && ".join(f"test -x {shlex.quote(prefix + '/bin/' + t)}" for t in targets)
        return f"if {checks} && test -f {shlex.quote(prefix)}/.llamarig-build.json; then cat {shlex.quote(prefix)}/.llamarig-build.json; fi"

    def process(self, output):
        text = "\n".join(output).strip()
        return json.loads(text) if text else None


@operation()
def llama_build(plan: dict, jobs: int | None, ccache_dir: str | None, script: str):
    """
    Build and install one commit of llama.cpp or ik_llama.cpp into its own prefix.

    + plan: from ``llamarig.build.build_plan`` (key, commit, paths, cmake arguments, targets)
    + jobs: compile jobs, None for the rig's CPU count
    + ccache_dir: CCACHE_DIR on the rig, or None
    + script: path of the installed llamarig-build.sh

    Does nothing when the prefix already holds a complete build of these targets.
    """
    if host.get_fact(InstalledBuild, prefix=plan["prefix"], targets=plan["targets"]) is not None:
        host.noop(f"{plan['prefix']} is already built")
        return
    env = f"CCACHE_DIR={shlex.quote(ccache_dir)} " if ccache_dir else ""
    words = [script, plan["src"], plan["url"], plan["commit"], plan["work"], plan["build_dir"],
             plan["prefix"], jobs or 0, " ".join(plan["targets"]), "--", *plan["cmake_args"]]
    yield StringCommand(env + quote_all(words))


@deploy("Build")
def apply(rig):
    doc = rig.doc
    installed = host.get_fact(DebPackages) or {}
    missing = [p for p in doc["build_packages"] if p not in installed]
    if missing:
        apt.packages(name="Install build dependencies", packages=missing, update=True, no_recommends=True)

    nvcc = host.get_fact(NvccPath) if doc["gpus"] else None
    archs: list[str] = []
    if nvcc:
        gpus = host.get_fact(GpuState) or []
        archs = cuda_architectures(doc["build_cuda_architectures"], [g["compute_cap"] for g in gpus])
        if not archs:
            server.shell(name="CUDA architectures", commands=[fail_command(
                "build_cuda_architectures is auto but nvidia-smi reports no compute capability; declare them")])
            return None
    cuda = bool(nvcc and archs)
    locked = rig.locked_build
    if locked is not None and (locked["cuda"], list(locked["cuda_architectures"])) != (cuda, archs):
        seen = f"CUDA {','.join(archs)}" if cuda else "a CPU build (no nvcc)" if doc["gpus"] else "a CPU build"
        want = f"CUDA {','.join(locked['cuda_architectures'])}" if locked["cuda"] else "a CPU build"
        server.shell(name="Locked build", commands=[fail_command(
            f"rigs.lock builds {want} here, but the rig now calls for {seen}; nothing was built "
            f"(run `llamarig lock --update` to lock what the rig has)")])
        return None
    plan = build_plan(doc, rig.commit, cuda=cuda, archs=archs)
    plan["url"] = doc["build_git_url"]

    script = layout.libexec(doc["build_root"], "llamarig-build.sh")
    files.directory(name="llamarig directories", path=str(Path(script).parent), present=True)
    files.put(name="Build script", src=str(TEMPLATES / "llamarig-build.sh"), dest=script, mode="755")
    kind = f"CUDA {','.join(archs)}" if plan["cmake_args"].count("-DGGML_CUDA=ON") else "CPU"
    built = llama_build(name=f"Build {doc['build_fork']} {rig.commit[:12]} ({kind})", plan=plan,
                        jobs=doc["build_jobs"], ccache_dir=doc["build_ccache_dir"], script=script)
    link = files.link(name=f"Use build {plan['key']}", path=plan["link"], target=plan["prefix"], symbolic=True)
    return Built(ops=(built, link), prefix=plan["prefix"])
