"""Where results are kept on the controller: beside the inventory, one JSON file per rig, service and run.

``INVENTORY_DIR/bench-results/RIG/SERVICE/STAMP.json`` (STAMP: the run's UTC time,
``20261201T223000Z``), with ``STAMP.txt`` (the table) and ``STAMP-speed.png`` /
``STAMP-energy.png`` (the charts) beside it. The newest earlier JSON of the same rig
and service is what a run is compared with.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

DIR_NAME = "bench-results"


def results_root(inventory: str, override: str | None = None) -> Path:
    return Path(override) if override else Path(inventory).resolve().parent / DIR_NAME


def service_dir(root: Path, rig: str, service: str) -> Path:
    return root / rig / service


def stamp(epoch: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


def previous(directory: Path, before: str | None = None) -> tuple[Path, dict] | None:
    """The newest result in ``directory`` older than stamp ``before`` (all when None) that can be read."""
    if not directory.is_dir():
        return None
    for path in sorted(directory.glob("*.json"), reverse=True):
        if before is not None and path.stem >= before:
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("summary"):
            return path, data
    return None


def save(directory: Path, name: str, result: dict, table: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    path, text = directory / f"{name}.json", directory / f"{name}.txt"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    text.write_text(table)
    return path, text
