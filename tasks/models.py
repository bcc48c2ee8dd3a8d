"""Download each rig's models on the rig through huggingface_hub, one directory per revision, skipping files already complete."""

from __future__ import annotations

import json
import shlex

from packaging.requirements import Requirement
from pyinfra import host
from pyinfra.api import FactBase, deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, server

from llamarig import layout, programs
from llamarig.lookups.hub import ResolvedModel
from llamarig.release.model_files import expected_files, is_complete

from . import rig_programs
from .root_files import secret_file
from .util import LiveCommand, progress_env, quote_all


class PythonPackageVersion(FactBase):
    """Version of a distribution installed in a venv, or None."""

    def command(self, venv, distribution):
        code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
        return f"test -x {shlex.quote(venv)}/bin/python && {shlex.quote(venv)}/bin/python -c {shlex.quote(code)} 2>/dev/null || true"

    def process(self, output):
        lines = [line.strip() for line in output if line.strip()]
        return lines[-1] if lines else None


class ModelFiles(FactBase):
    """A model revision directory's manifest, and the size and identity of every file under it, as the rig's
    downloader computes them (its ``--state`` mode, sent inline: file identity has one definition)."""

    def command(self, path):
        return quote_all(["python3", "-c", programs.source(programs.FETCH), "--state", path,
                          "--manifest", layout.MANIFEST])

    @staticmethod
    def default():
        return {"manifest": None, "sizes": {}, "identity": {}}

    def process(self, output):
        try:
            state = json.loads([line for line in output if line.strip()][-1])
        except (ValueError, IndexError):
            state = {}
        if not isinstance(state, dict):
            state = {}
        return {"manifest": state.get("manifest"), "sizes": state.get("sizes") or {},
                "identity": state.get("identity") or {}}


@operation()
def hub_model(model: ResolvedModel, dest: str, python: str, script: str, endpoint: str, token_file: str | None):
    """
    Make ``dest`` hold exactly the resolved files of a Hub model, verified.

    + model: the model resolved on the controller (commit, files with sizes and sha256)
    + dest: the model's revision directory on the rig
    + python: the interpreter with huggingface_hub
    + script: path of the installed llamarig-fetch-model.py
    + endpoint: the Hub endpoint (HF_ENDPOINT)
    + token_file: root-only file holding the Hub token, or None

    **Example:**

    .. code:: python

        hub_model(name="Model", model=resolved, dest="/var/lib/llamarig/models/glm/0123456789ab",
                  python="/opt/llamarig/venv/bin/python", script=path, endpoint="https://huggingface.co",
                  token_file=None)
    """
    state = host.get_fact(ModelFiles, path=dest)
    if is_complete(state, model):
        host.noop(f"{dest} holds {model.repo}@{model.commit[:12]}, all {len(model.files)} file(s) complete")
        return
    words = [python, script, "--repo", model.repo, "--commit", model.commit, "--dest", dest,
             "--manifest", layout.MANIFEST, "--files", json.dumps(expected_files(model), sort_keys=True)]
    if token_file:
        words += ["--token-file", token_file]
    env = f"HF_ENDPOINT={shlex.quote(endpoint)} HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "
    yield LiveCommand(progress_env() + env + quote_all(words))


@deploy("Models")
def apply(deployment):
    doc, rig = deployment.doc, deployment.rig
    if not rig.models:
        return {}
    venv = layout.hub_venv(doc["build_root"])
    installed = host.get_fact(DebPackages) or {}
    if "python3-venv" not in installed:
        apt.packages(name="Install python3-venv", packages=["python3-venv"], update=True, no_recommends=True)
    requirement = Requirement(doc["hub_client"])
    version = host.get_fact(PythonPackageVersion, venv=venv, distribution=requirement.name)
    if version is None or not requirement.specifier.contains(version, prereleases=True):
        server.shell(name=f"Install {doc['hub_client']} in {venv}", commands=[
            f"test -x {shlex.quote(venv)}/bin/python || python3 -m venv {shlex.quote(venv)}",
            f"{shlex.quote(venv)}/bin/pip install --quiet {shlex.quote(doc['hub_client'])}",
        ])
    script = rig_programs.install(doc, programs.FETCH)
    files.directory(name="Models directory", path=doc["models_dir"], present=True, mode="755")
    token_file = layout.HUB_TOKEN_FILE
    if rig.hub_token:
        secret_file(name=f"Hub token ({token_file}, root only)", path=token_file, secret=rig.hub_token)
    else:
        files.file(name="No Hub token", path=token_file, present=False)
    ops = {}
    for name, model in sorted(rig.models.items()):
        ops[name] = hub_model(
            name=f"Model {name}: {model.repo}@{model.commit[:12]} ({model.total_bytes / 2**30:.2f} GiB)",
            model=model, dest=layout.model_revision_dir(doc["models_dir"], name, model.commit),
            python=f"{venv}/bin/python", script=script, endpoint=doc["hub_endpoint"],
            token_file=token_file if rig.hub_token else None,
        )
    return ops


class ModelRevisions(FactBase):
    """The revision directories (those holding a manifest) under a models directory: [[model, label], ...]."""

    @staticmethod
    def default():
        return []

    def command(self, models_dir):
        q = shlex.quote(models_dir)
        return f"test -d {q} && find {q} -mindepth 3 -maxdepth 3 -name {shlex.quote(layout.MANIFEST)} -printf '%P\\n' || true"

    def process(self, output):
        return sorted(line.strip().split("/")[:2] for line in output if line.count("/") == 2)


@operation()
def old_revisions(models_dir: str, keep: dict):
    """
    Remove the revision directories of declared models that no unit runs any more.

    + models_dir: the rig's models directory
    + keep: model name -> the revision label its services run (models not named here are left alone)

    Called once every service of the rig has answered: until then the old revision is what a
    rollback returns to.

    **Example:**

    .. code:: python

        old_revisions(name="Prune", models_dir="/var/lib/llamarig/models", keep={"glm": "0123456789ab"})
    """
    old = [(name, label) for name, label in host.get_fact(ModelRevisions, models_dir=models_dir)
           if name in keep and label != keep[name]]
    if not old:
        host.noop(f"{models_dir} holds only the revisions the services run")
    for name, label in old:
        yield f"rm -rf {shlex.quote(layout.model_revision_dir(models_dir, name, label))}"


@deploy("Old model revisions")
def prune(deployment):
    keep = {name: layout.revision_label(model.commit) for name, model in deployment.rig.models.items()}
    if keep:
        old_revisions(name="Remove model revisions no service runs", models_dir=deployment.doc["models_dir"],
                      keep=keep)
