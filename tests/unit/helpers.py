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
