"""Load a pyinfra inventory file and its group data without pyinfra.

The offline CLI (``llamarig check``/``render``) must see exactly the data that
``pyinfra INVENTORY deploy.py`` gives each host, without connecting anywhere.
This mirrors pyinfra 3's CLI loader (``pyinfra_cli/inventory.py``):

- module-level lists (or ``(hosts, data)`` tuples) in the inventory file are
  groups; a host is a name or ``(name, data)``; the file's own name is a group;
  with a group ``all``, its hosts are the inventory's hosts;
- ``group_data/*.py`` is read from the current directory, then from the
  inventory file's directory; each file's name is a group; names a file
  imports are dropped unless it sets ``__all__``;
- precedence, highest first: host data, group data (later groups win), ``all``.

Where pyinfra would warn, silently drop or merge something, or stop with a
traceback, this loader raises ``InventoryError`` with a sentence that names the
file (and the line, or the host and its group) and says what was expected: a
host data that is not a mapping, a host entry that is neither a name nor a
``(name, data)`` pair, a group that is not a list, no host at all, one host
listed twice with different data, a group data file that is not assignments.

``tests/unit/test_inventory_loader.py`` checks it against pyinfra's own loader.
"""

from __future__ import annotations

import ast
import copy
import traceback
import types
from collections.abc import ItemsView, KeysView, Mapping, ValuesView
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


# Names YAML and JSON spell differently: a NameError on one of them gets the Python spelling.
_PYTHON_SPELLING = {"true": "True", "false": "False", "null": "None", "none": "None", "yes": "True", "no": "False"}
_HOST_EXAMPLE = '("r1", {"ssh_hostname": "192.168.1.50"})'
_DATA_EXAMPLE = '{"ssh_hostname": "192.168.1.50"}'
_NOT_A_GROUP = "a name that is not a group starts with _"


def _what(value: Any) -> str:
    """``value``'s kind in words: ``a list``, ``an int``, ``a string ('x')``, ``None``."""
    if value is None:
        return "None"
    if isinstance(value, str):
        shown = repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
        return f"a string ({shown})"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _load_error(path: Path, exc: BaseException) -> InventoryError:
    """The error for a file that raised ``exc`` while compiled or executed: the file, the line in it, the cause."""
    filename = str(path)
    line = None
    if isinstance(exc, SyntaxError) and exc.filename == filename:
        line, text = exc.lineno, exc.msg
    else:
        text = str(exc)
        for frame in traceback.extract_tb(exc.__traceback__):
            if frame.filename == filename:
                line = frame.lineno  # the innermost line of this file (a call into other code, maybe)
    hint = ""
    if isinstance(exc, NameError) and (getattr(exc, "name", None) or "").lower() in _PYTHON_SPELLING:
        hint = f" (Python spells it {_PYTHON_SPELLING[exc.name.lower()]})"
    where = f"{filename}, line {line}" if line else filename
    return InventoryError(f"{where}: could not be loaded: {type(exc).__name__}: {text}{hint}")


def _exec_file(path: Path) -> dict:
    namespace: dict[str, Any] = {"__file__": str(path), "__name__": f"llamarig_inventory_{path.stem}"}
    try:
        code = compile(path.read_text(encoding="utf-8"), str(path), "exec")
        exec(code, namespace)  # noqa: S102 - inventory files are Python by design
    except Exception as exc:  # a user's file: report, never a traceback
        raise _load_error(path, exc) from None
    return namespace


def _imported_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.asname or alias.name for alias in node.names if alias.name != "*")
    return names


def _check_keys(where: str, data: Any, kind: str, example: str) -> dict:
    """``data`` as a dict, or the error saying that ``kind`` must be a mapping of string keys."""
    if not isinstance(data, Mapping):
        raise InventoryError(f"{where}: its {kind} is {_what(data)}: expected a mapping of {kind} keys to values, "
                             f"such as {example}")
    for key in data:
        if not isinstance(key, str):
            raise InventoryError(f"{where}: {kind} key {key!r} is {_what(key)}: expected a string key, "
                                 f"such as {example}")
    return dict(data)


_LITERALS = {ast.Dict: "dict", ast.Set: "set", ast.List: "list", ast.Tuple: "tuple"}


def _statements(path: Path, group_data: bool) -> ast.Module:
    """The file's syntax tree, once it has run; refuses top-level statements that define nothing though meant
    to (pyinfra drops them silently): ``key: value`` (a YAML habit, an annotation in Python), and a literal on
    its own (a JSON habit: the names are the keys, or the groups)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and node.value is None:
            shown = ast.unparse(node)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise InventoryError(f"{path}, line {node.lineno}: {shown} is an annotation, not an assignment: "
                                 f"expected {ast.unparse(node.target)} = VALUE (YAML's key: value sets nothing "
                                 f"in Python)")
        if isinstance(node, ast.Expr) and type(node.value) in _LITERALS:
            kind = _LITERALS[type(node.value)]
            if group_data:
                raise InventoryError(f"{path}, line {node.lineno}: a {kind} on its own is not group data: expected "
                                     f"assignments, one per key, such as build_ref = \"b7100\" (each top-level "
                                     f"name of a group data file is a key)")
            raise InventoryError(f"{path}, line {node.lineno}: a {kind} on its own is not a group: expected a name "
                                 f"for it, such as rigs = [{_HOST_EXAMPLE}]")
    return tree


def _group_data_file(file: Path) -> dict:
    """The data of one ``group_data/GROUP.py``: its top-level names (``__all__``'s, else all but imported ones)."""
    attrs = _exec_file(file)
    tree = _statements(file, group_data=True)
    if "__all__" in attrs:
        keys = attrs["__all__"]
        if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
            raise InventoryError(f"{file}: __all__ is {_what(keys)}: expected a list of the names of the file's "
                                 f"keys, such as __all__ = [\"build_ref\"]")
        missing = [k for k in keys if k not in attrs]
        if missing:
            raise InventoryError(f"{file}: __all__ names {missing[0]}, which the file does not define: expected "
                                 f"only names the file assigns")
    else:
        imported = _imported_names(tree)
        keys = [k for k in attrs if k not in imported]
    return {k: v for k, v in attrs.items() if k in keys and not k.startswith("__")}


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
            merged.setdefault(file.stem, {}).update(_group_data_file(file))
    return merged


_ITERATORS = (types.GeneratorType, map, filter, zip, KeysView, ValuesView, ItemsView)


def _misplaced_group(path: Path, key: str, value: Any) -> InventoryError | None:
    """The error for a top-level name that is meant as a group but is no list: a dict of hosts, a set of
    names, a generator. Other values (numbers, strings, helpers, ALL_CAPS constants) are not groups, as
    in pyinfra."""
    if key.isupper():
        return None
    if isinstance(value, Mapping) and value and all(isinstance(v, (Mapping, type(None))) for v in value.values()):
        names = [k for k in value if isinstance(k, str)][:2] or ["r1"]
        example = ", ".join(f"({n!r}, {{...}})" for n in names)
        return InventoryError(f"{path}: group {key} is a dict: expected a list of hosts, such as "
                              f"{key} = [{example}] ({_NOT_A_GROUP})")
    if isinstance(value, (set, frozenset)) and value and all(isinstance(v, (str, tuple)) for v in value):
        return InventoryError(f"{path}: group {key} is a set: expected a list of hosts, in brackets, such as "
                              f"{key} = [{_HOST_EXAMPLE}, \"r2\"] ({_NOT_A_GROUP})")
    if isinstance(value, _ITERATORS):
        return InventoryError(f"{path}: group {key} is {_what(value)}: expected a list of hosts (write the "
                              f"comprehension in brackets, or list(...)) ({_NOT_A_GROUP})")
    return None


def _groups_of(path: Path, attrs: dict) -> dict[str, tuple[list, dict]]:
    """The inventory file's groups, each as (entries, group data), in file order."""
    groups: dict[str, tuple[list, dict]] = {}
    for key, value in attrs.items():
        if key.startswith("_"):
            continue
        if isinstance(value, list):
            groups[key] = (value, {})
        elif isinstance(value, tuple):
            if len(value) != 2 or not isinstance(value[0], (list, tuple)):
                one = (f" (one host is written {key} = [({value[0]!r}, {{...}})])"
                       if len(value) == 2 and isinstance(value[0], str) else "")
                raise InventoryError(f"{path}: group {key} is a tuple of {len(value)} item(s): expected a list of "
                                     f"hosts, or a (list of hosts, group data) pair{one}")
            data = _check_keys(f"{path}: group {key}", value[1], "group data", '{"build_ref": "b7100"}')
            groups[key] = (list(value[0]), data)
        else:
            error = _misplaced_group(path, key, value)
            if error is not None:
                raise error
    return groups


def _host_of(path: Path, group: str, index: int, entry: Any, entries: list) -> tuple[str, dict]:
    """(name, data) of one entry of a group: a name, or a (name, data) pair."""
    where = f"{path}: group {group}, entry {index}"
    if isinstance(entry, str):
        name, data = entry, {}
    elif isinstance(entry, tuple) and len(entry) == 2:
        name, data = entry
    else:
        if isinstance(entry, tuple):
            got = f"a tuple of {len(entry)} item(s)"
        elif isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str):
            got = f"a list: write the pair in parentheses, ({entry[0]!r}, {{...}})"
        else:
            got = _what(entry)
        note = "" if any(isinstance(e, (str, tuple)) for e in entries) else f" ({_NOT_A_GROUP})"
        raise InventoryError(f"{where}: expected a host name or a (name, data) pair, got {got}{note}")
    if not isinstance(name, str):
        raise InventoryError(f"{where}: host name {name!r} is {_what(name)}: expected a non-empty string")
    if not name.strip() or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InventoryError(f"{where}: host name {name!r}: expected a non-empty string without control characters")
    data = _check_keys(f"{path}: host {name} (group {group})", data, "host data", _DATA_EXAMPLE)
    return name, data


def _no_hosts(path: Path, attrs: dict, groups: list[str]) -> InventoryError:
    """The error for an inventory without a host, with what the file has instead."""
    if groups:
        names = groups[0] if len(groups) == 1 else ", ".join(groups[:-1]) + " and " + groups[-1]
        why = f" ({names} {'is' if len(groups) == 1 else 'are'} empty)"
    else:
        others = [(k, v) for k, v in attrs.items() if not k.startswith("_") and not isinstance(
            v, (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type, list, tuple))]
        why = f" ({others[0][0]} is {_what(others[0][1])}, not a list)" if others else ""
    return InventoryError(f"{path}: no hosts: expected at least one host, in a list such as "
                          f"rigs = [{_HOST_EXAMPLE}]{why}")


def load_inventory(inventory: str | Path, cwd: str | Path | None = None) -> list[HostEntry]:
    """Every host of the inventory with its merged data, in inventory order."""
    path = Path(inventory)
    if not path.is_file():
        raise InventoryError(f"{path}: no such inventory file")
    cwd = Path(cwd or Path.cwd())
    attrs = _exec_file(path)
    _statements(path, group_data=False)
    groups = _groups_of(path, attrs)
    group_names = list(groups)

    # Every entry, checked: (group, index, name, data) in file order, the group all's among them.
    listed = [(gname, i, *_host_of(path, gname, i, entry, entries))
              for gname, (entries, _) in groups.items() for i, entry in enumerate(entries)]
    with_data: dict[str, tuple[str, int, dict]] = {}
    for gname, i, name, data in listed:
        if not data:
            continue  # a name alone is group membership
        first = with_data.setdefault(name, (gname, i, data))
        if first[2] != data:
            places = (f"in group {gname} (entries {first[1]} and {i})" if first[0] == gname else
                      f"in group {first[0]} (entry {first[1]}) and in group {gname} (entry {i})")
            raise InventoryError(f"{path}: host {name} is listed twice with different data, {places}: expected "
                                 f"its data in one entry (pyinfra would merge the two, one's keys silently "
                                 f"overriding the other's); list it by name alone in other groups")

    all_data: dict = {}
    all_names: list[str] = []
    if "all" in groups:
        # pyinfra's hosts are the group all's: a host only in another group is no host.
        entries, all_data = groups.pop("all")
        for name in (n for g, _, n, _ in listed if g == "all"):
            if name not in all_names:
                all_names.append(name)
        for gname, i, name, _ in listed:
            if name not in all_names:
                raise InventoryError(f"{path}: host {name} (group {gname}) is not in group all: expected every "
                                     f"host in all, as the file defines all (pyinfra would leave {name} out)")
    else:
        for _, _, name, _ in listed:
            if name not in all_names:
                all_names.append(name)
    if not all_names:
        raise _no_hosts(path, attrs, group_names)

    file_group = path.name.rsplit(".", 1)[0]
    if file_group not in groups and file_group != "all":
        groups[file_group] = (list(all_names), {})

    group_data = load_group_data(_group_data_dirs(path, cwd))
    all_data = {**copy.deepcopy(all_data), **group_data.pop("all", {})}

    # Host data: from the one entry of each host that has data (the others are equal to it, or names alone).
    host_data: dict[str, dict] = {name: {} for name in all_names}
    for _, _, name, data in listed:
        host_data[name].update(data)
    host_groups: dict[str, list[str]] = {name: [] for name in all_names}
    group_values: dict[str, dict] = {}
    for gname, (entries, gdata) in groups.items():
        gdata = dict(gdata)
        gdata.update(group_data.pop(gname, {}))
        group_values[gname] = gdata
        for entry in entries:
            name = entry[0] if isinstance(entry, tuple) else entry
            host_groups[name].append(gname)

    result = []
    for name in all_names:
        merged = copy.deepcopy(all_data)
        for gname in host_groups[name]:
            merged.update(copy.deepcopy(group_values[gname]))
        merged.update(copy.deepcopy(host_data[name]))
        result.append(HostEntry(name=name, groups=host_groups[name], data=merged))
    return result


def load_checked(inventory: str | Path) -> tuple[list[HostEntry], dict[str, dict]] | None:
    """The inventory's entries and every host's validated data; None, with the problems printed on
    stderr, when the file cannot be loaded or any host's data is bad (the CLI's commands stop there)."""
    import sys

    from llamarig.hostdata.rpc_links import groups_of
    from llamarig.hostdata.validate import format_problems, validate_all

    try:
        entries = load_inventory(inventory)
    except InventoryError as exc:
        print(f"llamarig: {exc}", file=sys.stderr)
        return None
    docs, problems = validate_all([(e.name, e.data) for e in entries], groups_of(entries))
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return None
    return entries, docs
