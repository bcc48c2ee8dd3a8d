"""Build host data the way pyinfra would: group_data/all.py defaults under a rig's own keys."""

from __future__ import annotations

import copy
from pathlib import Path

from llamarig.hostdata.inventory import load_group_data

ROOT = Path(__file__).resolve().parents[2]
DEFAULTS = load_group_data([ROOT / "group_data"])["all"]


def rig(**overrides) -> dict:
    data = copy.deepcopy(DEFAULTS)
    data.update({
        "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 2,
        "models": {"gemma": {"repo": "acme/gemma-GGUF", "include": ["*.gguf"],
                             "file": "gemma-00001-of-00003.gguf"}},
        "services": [{"name": "chat", "model": "gemma", "port": 8080}],
    })
    data.update(copy.deepcopy(overrides))
    return data


COMMIT = "abcdefabcdef0123456789abcdef0123456789ab"
MODEL_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def resolved_rig(host: str, doc: dict, files: dict | None = None, commit: str = COMMIT,
                 model_commit: str = MODEL_COMMIT, placements: dict | None = None):
    """A ResolvedRig made by hand (no lookups): every used model at ``model_commit``, its declared file or
    ``files[name]``."""
    from llamarig.lookups.hub import ResolvedModel
    from llamarig.release.resolve import ResolvedRig

    files = files or {}
    models = {}
    for name in sorted({s["model"] for s in doc["services"]}):
        m = doc["models"][name]
        models[name] = ResolvedModel(m["repo"], m["revision"], model_commit, [], m["file"] or files[name],
                                     doc["hub_endpoint"])
    return ResolvedRig(host, doc, commit, models, placements or {})


def release_of(host: str, doc: dict, facts=None, **kwargs):
    """The release of a hand-resolved rig (a CPU build unless ``facts`` say otherwise)."""
    from llamarig.release.assemble import RigFacts, make_release

    return make_release(resolved_rig(host, doc, **kwargs), facts or RigFacts(False))


def unit_text(host: str, doc: dict, service_name: str | None = None, **kwargs) -> str:
    """The text of one service's unit (the first service's by default) in its release."""
    release = release_of(host, doc, **kwargs)
    name = service_name or doc["services"][0]["name"]
    return release.units[f"llamarig-{name}.service"].text
