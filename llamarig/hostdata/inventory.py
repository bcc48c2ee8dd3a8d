"""Load a pyinfra inventory file and its group data without pyinfra.

The offline CLI (``llamarig check``/``render``) must see exactly the data that
``pyinfra INVENTORY deploy.py`` gives each host, without connecting anywhere.
This mirrors pyinfra 3's CLI loader (``pyinfra_cli/inventory.py``):

- module-level lists (or ``(hosts, data)`` tuples) in the inventory file are
  groups; a host is a name or ``(name, data)``; the file's own name is a group;
- ``group_data/*.py`` is read from the current directory, then from the
  inventory file's directory; each file's name is a group; names a file
  imports are dropped unless it sets ``__all__``;
- precedence, highest first: host data, group data (later groups win), ``all``.

``tests/unit/test_inventory_loader.py`` checks it against pyinfra's own loader.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class InventoryError(Exception):
    pass


@dataclass
class HostEntry:
    name: str
    groups: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def _exec_file(path: Path) -> dict:
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": f"llamarig_inventory_{path.stem}"}
    try:
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        exec(code, namespace)  # noqa: S102 - inventory files are Python by design
    except Exception as exc:  # a user's file: report, never a traceback
        raise InventoryError(f"{path}: could not be loaded: {type(exc).__name__}: {exc}") from None
    return namespace


def _imported_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names if alias.name != "*")
    return names


def _is_group(key: str, value: Any) -> bool:
    if key.startswith("_"):
        return False
    if isinstance(value, tuple):
        value = value[0]
    if not isinstance(value, list):
        return False
    return all(isinstance(item, (str, tuple)) for item in value)


def _group_data_dirs(inventory: Path, cwd: Path) -> list[Path]:
    dirs = [cwd / "group_data"]
    inv_dir = inventory.parent.resolve()
    if inv_dir != cwd.resolve():
        dirs.append(inv_dir / "group_data")
    return dirs


def load_group_data(dirs: list[Path]) -> dict[str, dict]:
    merged: dict[str, dict] = {}
    for folder in dirs:
        if not folder.is_dir():
            continue
        for file in sorted(folder.iterdir()):
            if file.suffix != ".py":
                continue
            attrs = _exec_file(file)
            keys = attrs["__all__"] if "__all__" in attrs else [k for k in attrs if k not in _imported_names(file)]
            data = {k: v for k, v in attrs.items() if k in keys and not k.startswith("__")}
            merged.setdefault(file.stem, {}).update(data)
    return merged


def load_inventory(inventory: str | Path, cwd: str | Path | None = None) -> list[HostEntry]:
    """Every host of the inventory with its merged data, in inventory order."""
    path = Path(inventory)
    if not path.is_file():
        raise InventoryError(f"{path}: no such inventory file")
    cwd = Path(cwd or Path.cwd())
    attrs = _exec_file(path)
    groups = {k: v for k, v in attrs.items() if _is_group(k, v)}

    all_data: dict = {}
    if "all" in groups:
        all_hosts = groups.pop("all")
        if isinstance(all_hosts, tuple):
            all_hosts, all_data = all_hosts
        all_hosts = [h[0] if isinstance(h, tuple) else h for h in all_hosts]
    else:
        all_hosts = []
        for hosts in groups.values():
            hosts = hosts[0] if isinstance(hosts, tuple) else hosts
            for host in hosts:
                name = host[0] if isinstance(host, tuple) else host
                if name not in all_hosts:
                    all_hosts.append(name)

    file_group = path.name.rsplit(".", 1)[0]
    if file_group not in groups:
        groups[file_group] = list(all_hosts)

    group_data = load_group_data(_group_data_dirs(path, cwd))
    all_data = {**copy.deepcopy(all_data), **group_data.pop("all", {})}

    host_data: dict[str, dict] = {name: {} for name in all_hosts}
    host_groups: dict[str, list[str]] = {name: [] for name in all_hosts}
    group_values: dict[str, dict] = {}
    for gname, hosts in groups.items():
        gdata: dict = {}
        if isinstance(hosts, tuple):
            hosts, gdata = hosts
            gdata = dict(gdata)
        gdata.update(group_data.pop(gname, {}))
        group_values[gname] = gdata
        for host in hosts:
            name, data = (host[0], host[1]) if isinstance(host, tuple) else (host, {})
            host_data.setdefault(name, {}).update(data)
            host_groups.setdefault(name, []).append(gname)

    entries = []
    for name in host_data:
        merged = copy.deepcopy(all_data)
        for gname in host_groups.get(name, []):
            merged.update(copy.deepcopy(group_values[gname]))
        merged.update(copy.deepcopy(host_data[name]))
        entries.append(HostEntry(name=name, groups=host_groups.get(name, []), data=merged))
    return entries


def load_checked(inventory: str | Path) -> tuple[list[HostEntry], dict[str, dict]] | None:
    """The inventory's entries and every host's validated data; None, with the problems printed on
    stderr, when the file cannot be loaded or any host's data is bad (the CLI's commands stop there)."""
    import sys

    from llamarig.hostdata.validate import format_problems, validate_all

    try:
        entries = load_inventory(inventory)
    except InventoryError as exc:
        print(f"llamarig: {exc}", file=sys.stderr)
        return None
    docs, problems = validate_all([(e.name, e.data) for e in entries])
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return None
    return entries, docs
