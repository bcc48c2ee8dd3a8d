"""``rigs.lock``: what every rig of an inventory is built from and serves, exactly.

For each rig: the fork's resolved commit, the CMake arguments and CUDA
architectures that name its install prefix, each model's resolved revision with
every file's size and sha256, and the digest of each rendered unit. TOML, one
key per line, sorted: it diffs well and is meant to be committed. Written by
``llamarig lock`` (``llamarig/commands/lock.py``), honoured by every deploy
(``llamarig/release/resolve.py``, from ``tasks/preflight.py``): a locked rig builds the locked commit and fetches the
locked files, and data the lock does not cover stops the run before any host is
touched.

Pure: no network, no pyinfra. Resolving is the resolver's (``resolve.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from llamarig.lookups.hub import HubFile, ResolvedModel

LOCK_NAME = "rigs.lock"
VERSION = 1


class LockError(Exception):
    pass


def lock_path(inventory: str | os.PathLike) -> Path:
    """The lock of an inventory: ``rigs.lock`` in the inventory file's directory."""
    return Path(inventory).resolve().parent / LOCK_NAME


def lock_for(inventory: str | os.PathLike | None) -> Path | None:
    """The lock a run on ``inventory`` honours: ``$LLAMARIG_LOCK`` when set, else the inventory's own."""
    named = os.environ.get("LLAMARIG_LOCK")
    if named:
        return Path(named)
    return lock_path(inventory) if inventory else None


def unit_digest(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --- what the data asks for, compared with what a lock entry was made from ----------------------

def build_inputs(doc: dict) -> dict:
    """The keys of the host data a locked build was resolved from."""
    keys = ("build_fork", "build_git_url", "build_ref", "build_cmake_options", "build_targets",
            "build_cuda_architectures")
    return {key: list(doc[key]) if isinstance(doc[key], list) else doc[key] for key in keys}


def model_inputs(model: dict) -> dict:
    """The keys of a ``models`` entry a locked model was resolved from."""
    return {"repo": model["repo"], "revision": model["revision"], "include": list(model["include"]),
            "file": model["file"]}


@dataclass
class Mismatch:
    key: str  # the host-data key, as validation names them
    value: object
    locked: object


def build_uncovered(entry: dict, doc: dict) -> list[Mismatch]:
    """What ``doc`` asks of the build that the rig's lock ``entry`` was not made from."""
    locked = entry["build"]["inputs"]
    return [Mismatch(key, value, locked.get(key))
            for key, value in build_inputs(doc).items() if locked.get(key) != value]


def model_uncovered(entry: dict, name: str, model: dict) -> list[Mismatch]:
    """What the ``models`` entry ``name`` asks that the lock was not made from."""
    have = entry["models"].get(name)
    want = model_inputs(model)
    if have is None:
        return [Mismatch(f"models.{name}", want["repo"], None)]
    return [Mismatch(f"models.{name}.{key}", value, have["inputs"].get(key))
            for key, value in want.items() if have["inputs"].get(key) != value]


def used_models(doc: dict) -> list[str]:
    return sorted({svc["model"] for svc in doc["services"]})


def uncovered(entry: dict, doc: dict) -> list[Mismatch]:
    """Everything ``doc`` asks for that the rig's lock ``entry`` was not made from (empty: covered)."""
    out = build_uncovered(entry, doc)
    for name in used_models(doc):
        out += model_uncovered(entry, name, doc["models"][name])
    return out


def resolved_model(entry: dict, name: str, endpoint: str) -> ResolvedModel:
    """The locked resolution of model ``name``: exactly these files at this commit."""
    m = entry["models"][name]
    files = [HubFile(f["path"], int(f["size"]), f.get("sha256") or None) for f in m["files"]]
    return ResolvedModel(m["inputs"]["repo"], m["inputs"]["revision"], m["commit"], files, m["file"], endpoint)


# --- making an entry ------------------------------------------------------------------------------

def rig_entry(doc: dict, commit: str, cuda: bool, archs: list[str], cmake_args: list[str], key: str,
              models: dict[str, ResolvedModel], units: dict[str, str]) -> dict:
    """One rig's lock entry from what was resolved for it."""
    return {
        "build": {"inputs": build_inputs(doc), "commit": commit, "cuda": cuda, "cuda_architectures": list(archs),
                  "cmake_args": list(cmake_args), "key": key},
        "models": {name: {"inputs": model_inputs(doc["models"][name]), "commit": m.commit, "file": m.file,
                          "files": [{"path": f.path, "size": f.size, "sha256": f.sha256 or ""} for f in m.files]}
                   for name, m in sorted(models.items())},
        "units": {unit: unit_digest(text) for unit, text in sorted(units.items())},
    }


# --- the file -------------------------------------------------------------------------------------

def _toml(value) -> str:
    if value is None:  # TOML has no null; only a model's unset file is ever None
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {value!r}")


def _key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def dumps(rigs: dict[str, dict], inventory: str) -> str:
    """The lock file's text: a header, then one table per rig, build, model and unit set."""
    lines = [f"# {LOCK_NAME} of {inventory}: written by `llamarig lock`, honoured by every deploy.",
             "# Commit it. `llamarig lock --update` moves refs forward and prints what changed.",
             f"version = {VERSION}", ""]
    for host in sorted(rigs):
        entry = rigs[host]
        build = entry["build"]
        lines.append(f"[rigs.{_key(host)}.build]")
        for k in ("commit", "key", "cuda", "cuda_architectures", "cmake_args"):
            lines.append(f"{k} = {_toml(build[k])}")
        lines.append(f"inputs = {_toml(build['inputs'])}")
        lines.append("")
        for name, model in entry["models"].items():
            lines.append(f"[rigs.{_key(host)}.models.{_key(name)}]")
            lines.append(f"commit = {_toml(model['commit'])}")
            lines.append(f"file = {_toml(model['file'])}")
            lines.append(f"inputs = {_toml(model['inputs'])}")
            lines.append("files = [")
            for f in model["files"]:
                lines.append(f"  {_toml(f)},")
            lines.append("]")
            lines.append("")
        lines.append(f"[rigs.{_key(host)}.units]")
        for unit, digest in entry["units"].items():
            lines.append(f"{_key(unit)} = {_toml(digest)}")
        lines.append("")
    return "\n".join(lines)


def _none_if_empty(inputs: dict) -> dict:
    # TOML has no null: a model's unset file is written as "", read back as None.
    return {k: (None if k == "file" and v == "" else v) for k, v in inputs.items()}


def loads(text: str, where: str = LOCK_NAME) -> dict[str, dict]:
    """Rig name -> entry, from a lock file's text; LockError with the reason when it is not one."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LockError(f"{where}: not a lock file ({exc}); write it again with `llamarig lock --update`") from None
    if data.get("version") != VERSION:
        raise LockError(f"{where}: version {data.get('version')!r}, this llamarig reads version {VERSION}")
    rigs = data.get("rigs", {})
    try:
        for entry in rigs.values():
            entry.setdefault("models", {})
            entry.setdefault("units", {})
            for key in ("inputs", "commit", "key", "cuda", "cuda_architectures"):
                entry["build"][key]  # noqa: B018 - a KeyError names what the entry lacks
            for model in entry["models"].values():
                model["inputs"] = _none_if_empty(model["inputs"])
                for key in ("files", "commit", "file"):
                    model[key]  # noqa: B018
    except (KeyError, TypeError, AttributeError) as exc:
        raise LockError(f"{where}: an entry lacks {exc}; write it again with `llamarig lock --update`") from None
    return rigs


def read(path: str | os.PathLike) -> dict[str, dict] | None:
    """The lock at ``path``, or None when there is none."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    return loads(text, str(path))


def write(path: str | os.PathLike, rigs: dict[str, dict], inventory: str) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(rigs, inventory))
    os.replace(tmp, path)


# --- what changed ---------------------------------------------------------------------------------

def changes(old: dict[str, dict] | None, new: dict[str, dict]) -> list[str]:
    """One line per change between two locks: commit ranges, files, units."""
    old = old or {}
    out = []
    for host in sorted(set(old) | set(new)):
        if host not in new:
            out.append(f"{host}: no longer locked")
            continue
        if host not in old:
            out.append(f"{host}: locked (build {new[host]['build']['inputs']['build_fork']} "
                       f"{new[host]['build']['commit'][:12]}, {len(new[host]['models'])} model(s), "
                       f"{len(new[host]['units'])} unit(s))")
            continue
        a, b = old[host], new[host]
        ba, bb = a["build"], b["build"]
        if ba["commit"] != bb["commit"]:
            out.append(f"{host}: {bb['inputs']['build_fork']} {bb['inputs']['build_ref']}: {ba['commit'][:12]}..{bb['commit'][:12]}")
        elif ba["key"] != bb["key"]:
            out.append(f"{host}: build {ba['key']} -> {bb['key']} (options or CUDA architectures)")
        for name in sorted(set(a["models"]) | set(b["models"])):
            ma, mb = a["models"].get(name), b["models"].get(name)
            if mb is None:
                out.append(f"{host}: model {name}: no longer used")
            elif ma is None:
                out.append(f"{host}: model {name}: {mb['inputs']['repo']}@{mb['commit'][:12]}, {len(mb['files'])} file(s)")
            else:
                if ma["commit"] != mb["commit"]:
                    out.append(f"{host}: model {name}: {mb['inputs']['repo']} {ma['commit'][:12]}..{mb['commit'][:12]}")
                fa = {f["path"]: f for f in ma["files"]}
                fb = {f["path"]: f for f in mb["files"]}
                for path in sorted(set(fa) | set(fb)):
                    if path not in fb:
                        out.append(f"{host}: model {name}: - {path}")
                    elif path not in fa:
                        out.append(f"{host}: model {name}: + {path} ({fb[path]['size']} bytes)")
                    elif fa[path] != fb[path]:
                        out.append(f"{host}: model {name}: ~ {path} (sha256 {fa[path]['sha256'][:12]} -> "
                                   f"{fb[path]['sha256'][:12]})")
        for unit in sorted(set(a["units"]) | set(b["units"])):
            ua, ub = a["units"].get(unit), b["units"].get(unit)
            if ua != ub:
                what = "new" if ua is None else "removed" if ub is None else "changed"
                out.append(f"{host}: unit {unit} {what}")
    return out
