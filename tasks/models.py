"""Download each rig's models on the rig through huggingface_hub, one directory per revision, skipping files already complete."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from packaging.requirements import Requirement
from pyinfra import host
import hashlib
from io import StringIO

from pyinfra.api import FactBase, FileUploadCommand, StringCommand, deploy, operation
from pyinfra.facts.deb import DebPackages
from pyinfra.operations import apt, files, server

from llamarig import layout
from llamarig.lookups.hub import ResolvedModel

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
MANIFEST = ".llamarig-manifest.json"


def hub_venv(doc: dict) -> str:
    return f"{doc['build_root']}/venv"


class PythonPackageVersion(FactBase):
    """Version of a distribution installed in a venv, or None."""

    def command(self, venv, distribution):
        code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
        return f"test -x {shlex.quote(venv)}/bin/python && {shlex.quote(venv)}/bin/python -c {shlex.quote(code)} 2>/dev/null || true"

    def process(self, output):
        lines = [line.strip() for line in output if line.strip()]
        return lines[-1] if lines else None


def _ns(stamp: str) -> int:
    """find's %T@ (seconds with a fraction, as text) in nanoseconds, exactly: what os.stat's st_mtime_ns says."""
    whole, _, fraction = stamp.partition(".")
    return int(whole) * 10**9 + int((fraction + "000000000")[:9])


class ModelFiles(FactBase):
    """A model directory's manifest, and the size and identity (size, mtime and ctime in ns, inode) of every file under it."""

    def command(self, path):
        q = shlex.quote(path)
        return (f"cat {q}/{MANIFEST} 2>/dev/null; echo; echo '--- files'; "
                f"test -d {q} && find {q} -path {q}/.staging -prune -o -type f -printf '%P\\t%s\\t%T@\\t%C@\\t%i\\n' || true")

    def process(self, output):
        text = "\n".join(output)
        head, _, tail = text.partition("--- files")
        try:
            manifest = json.loads(head) if head.strip() else None
        except ValueError:
            manifest = None
        sizes, identity = {}, {}
        for line in tail.splitlines():
            fields = line.split("\t")
            if len(fields) == 5 and fields[1].isdigit():
                name, size, mtime, ctime, inode = fields
                sizes[name] = int(size)
                identity[name] = [int(size), _ns(mtime), _ns(ctime), int(inode)]
        return {"manifest": manifest, "sizes": sizes, "identity": identity}


TOKEN_FILE = "/etc/llamarig/hub-token"


class FileSha256(FactBase):
    """sha256 of a file, or None when it does not exist."""

    def command(self, path):
        return f"test -f {shlex.quote(path)} && sha256sum {shlex.quote(path)} | cut -d' ' -f1 || true"

    def process(self, output):
        lines = [line.strip() for line in output if line.strip()]
        return lines[0] if lines else None


@operation()
def secret_file(path: str, secret: str):
    """
    Keep a root-only (0600) file holding ``secret``, without the secret in any command, diff or log.

    + path: the file on the rig
    + secret: its content

    Compares digests, and uploads to a temporary file in a 0700 directory before moving it in place.
    """
    if host.get_fact(FileSha256, path=path) == hashlib.sha256(secret.encode()).hexdigest():
        host.noop(f"{path} is up to date")
        return
    directory = str(Path(path).parent)
    tmp = f"{directory}/.{Path(path).name}.tmp"
    yield f"mkdir -p {shlex.quote(directory)} && chmod 700 {shlex.quote(directory)} && rm -f {shlex.quote(tmp)} && (umask 077; : > {shlex.quote(tmp)})"
    yield FileUploadCommand(StringIO(secret), tmp)
    yield f"chmod 600 {shlex.quote(tmp)} && mv {shlex.quote(tmp)} {shlex.quote(path)}"


def expected_files(model: ResolvedModel) -> dict:
    return {f.path: {"size": f.size, "sha256": f.sha256} for f in model.files}


@operation()
def hub_model(model: ResolvedModel, dest: str, python: str, script: str, endpoint: str, token_file: str | None):
    """
    Make ``dest`` hold exactly the resolved files of a Hub model, verified.

    + model: the model resolved on the controller (commit, files with sizes and sha256)
    + dest: the model's directory on the rig
    + python: the interpreter with huggingface_hub
    + script: path of the installed llamarig-fetch-model.py
    + endpoint: the Hub endpoint (HF_ENDPOINT)
    + token_file: root-only file holding the Hub token, or None
    """
    state = host.get_fact(ModelFiles, path=dest)
    want = expected_files(model)
    manifest = state["manifest"] or {}
    complete = (
        manifest.get("repo") == model.repo
        and manifest.get("commit") == model.commit
        and manifest.get("files") == want
        and all(state["sizes"].get(path) == spec["size"] for path, spec in want.items())
        # a file written to since it was verified (a flipped byte) no longer has its recorded identity
        and all((manifest.get("identity") or {}).get(path) == state.get("identity", {}).get(path) for path in want)
    )
    if complete:
        host.noop(f"{dest} holds {model.repo}@{model.commit[:12]}, all {len(want)} file(s) complete")
        return
    words = [python, script, "--repo", model.repo, "--commit", model.commit, "--dest", dest,
             "--files", json.dumps(want, sort_keys=True)]
    if token_file:
        words += ["--token-file", token_file]
    env = f"HF_ENDPOINT={shlex.quote(endpoint)} HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "
    yield StringCommand(env + " ".join(shlex.quote(str(w)) for w in words))


@deploy("Models")
def apply(rig):
    doc = rig.doc
    if not rig.models:
        return {}
    venv = hub_venv(doc)
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
    script = layout.libexec(doc["build_root"], "llamarig-fetch-model.py")
    files.directory(name="llamarig directories", path=str(Path(script).parent), present=True)
    files.put(name="Model fetch script", src=str(TEMPLATES / "llamarig-fetch-model.py"), dest=script, mode="755")
    files.directory(name="Models directory", path=doc["models_dir"], present=True, mode="755")
    token = rig.hub_token
    if token:
        secret_file(name=f"Hub token ({TOKEN_FILE}, root only)", path=TOKEN_FILE, secret=token)
    else:
        files.file(name="No Hub token", path=TOKEN_FILE, present=False)
    ops = {}
    for name, model in sorted(rig.models.items()):
        ops[name] = hub_model(
            name=f"Model {name}: {model.repo}@{model.commit[:12]} ({model.total_bytes / 2**30:.2f} GiB)",
            model=model, dest=layout.model_revision_dir(doc["models_dir"], name, model.commit), python=f"{venv}/bin/python",
            script=script, endpoint=doc["hub_endpoint"], token_file=TOKEN_FILE if token else None,
        )
    return ops


class ModelRevisions(FactBase):
    """The revision directories (those holding a manifest) under a models directory: [[model, label], ...]."""

    @staticmethod
    def default():
        return []

    def command(self, models_dir):
        q = shlex.quote(models_dir)
        return f"test -d {q} && find {q} -mindepth 3 -maxdepth 3 -name {MANIFEST} -printf '%P\\n' || true"

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
    """
    old = [(name, label) for name, label in host.get_fact(ModelRevisions, models_dir=models_dir)
           if name in keep and label != keep[name]]
    if not old:
        host.noop(f"{models_dir} holds only the revisions the services run")
    for name, label in old:
        yield f"rm -rf {shlex.quote(layout.model_revision_dir(models_dir, name, label))}"


@deploy("Old model revisions")
def prune(rig):
    keep = {name: layout.revision_label(model.commit) for name, model in rig.models.items()}
    if keep:
        old_revisions(name="Remove model revisions no service runs", models_dir=rig.doc["models_dir"], keep=keep)
