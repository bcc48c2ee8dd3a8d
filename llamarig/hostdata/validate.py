"""Validate one host's data: the cerberus schema, every string's characters, then the rules across keys.

``validate_host(name, data)`` returns ``(normalized, problems)``; a problem names
the host, the key path, the bad value and what was expected. Nothing here
raises on bad data: callers collect the problems of every host and print them
together (``format_problems``). Every problem of a host comes out of one run: the
rules (``rules.py``) also read what the schema took of a refused document.
"""

from __future__ import annotations

import copy
import re

from llamarig.hostdata import messages, values
from llamarig.hostdata.problems import _MISSING, Key, Masked, Problem, format_path, format_problems
from llamarig.hostdata.rules import PLACEMENT_FLAGS, _SECRET_NAME, _secret_arg, cross_check, service_gpus, value_problems
from llamarig.hostdata.rpc_links import link_rpc
from llamarig.hostdata.schema import FOREIGN_KEY_PREFIXES, FORKS, SCHEMA

# What callers import from here: the pipeline, and the problem and rule names it is made of.
__all__ = ["Problem", "Key", "Masked", "PLACEMENT_FLAGS", "format_problems", "service_gpus", "cross_check",
           "value_problems", "validate_host", "validate_all", "llamarig_keys", "control_problems"]


def _leaf_errors(errors):
    for error in errors:
        if error.is_group_error and error.child_errors:
            yield from _leaf_errors(error.child_errors)
        else:
            yield error


def _schema_problems(host: str, validator, fork: str) -> list[Problem]:
    problems = []
    for error in _leaf_errors(validator._errors):
        path = format_path(error.document_path)
        value = error.value if error.rule != "required" else _MISSING
        if error.schema_path and "keysrules" in error.schema_path:  # the key itself is wrong
            key = error.document_path[-1]
            path, value = format_path(error.document_path[:-1]), Key(key) if isinstance(key, str) else Masked(f"key {key!r}")
        elif error.rule in (None, "__unknown__") or str(error.rule).startswith("__unknown"):
            value = Masked("(an unknown key)")
        problems.append(Problem(host, path, value, messages.expected(error, fork)))
    return problems


def _sanitized(validator) -> dict:
    """The normalized document with every value the schema refused replaced by its default (or null, or
    removed): what the cross-field rules may still read, so that one run reports every problem."""
    doc = copy.deepcopy(validator.document)
    for error in _leaf_errors(validator._errors):
        path = list(error.document_path)
        if not path:
            continue
        parent = doc
        for part in path[:-1]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if not isinstance(parent, (dict, list)):
            continue
        last = path[-1]
        unknown = error.rule in (None, "__unknown__") or str(error.rule).startswith("__unknown")
        if isinstance(parent, dict) and (unknown or "keysrules" in error.schema_path):
            parent.pop(last, None)
            continue
        rule = messages.rule_at(error.schema_path) or {}
        try:
            parent[last] = copy.deepcopy(rule.get("default"))
        except (IndexError, TypeError):
            pass
    return doc


def llamarig_keys(data: dict) -> dict:
    """The part of a host's data that is llamarig's (pyinfra's own keys dropped)."""
    return {k: v for k, v in data.items() if not str(k).startswith(FOREIGN_KEY_PREFIXES)}


def control_problems(host: str, data, path: tuple = (), secret: bool = False) -> list[Problem]:
    """Every string (key or value) holding a control character, anywhere in the host data; the value of a
    secret (an environment variable named like one, an API key in extra_args) is not shown."""
    out = []
    if isinstance(data, str):
        why = values.control_character(data)
        if why:
            out.append(Problem(host, format_path(path) or "(top level)", Masked("***") if secret else data, why))
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and values.control_character(key):
                out.append(Problem(host, format_path(path) or "(top level)", Key(key), values.control_character(key)))
                continue
            out += control_problems(host, value, path + (key,),
                                    secret or (path[-1:] == ("environment",) and bool(_SECRET_NAME.search(str(key)))))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            out += control_problems(host, value, path + (i,),
                                    secret or (path[-1:] == ("extra_args",) and _secret_arg(data, i)))
    return out


def validate_host(host: str, data) -> tuple[dict, list[Problem]]:
    """(normalized data, every problem of the host): the schema's, each value's and the cross-field rules', all
    of them in one run; the data is {} when the schema refused it."""
    if not isinstance(data, dict):
        return {}, [Problem(host, "(host data)", Masked(type(data).__name__), "a mapping of keys (a dict)")]
    data = llamarig_keys(data)
    fork = data.get("build_fork") if data.get("build_fork") in FORKS else "llama.cpp"
    validator = messages.StrictValidator(SCHEMA, allow_unknown=False)
    valid = validator.validate(data)
    problems = control_problems(host, data)
    seen = {(p.path, p.value) if isinstance(p.value, Key) else p.path for p in problems}
    # a key with a control character is reported once, by control_problems (its path would hold the character)
    problems += [p for p in _schema_problems(host, validator, fork)
                 if ((p.path, p.value) if isinstance(p.value, Key) else p.path) not in seen
                 and not values.control_character(p.path)]
    doc = validator.document if valid else _sanitized(validator)
    later = []
    for rules in (cross_check, value_problems):
        try:
            later += rules(host, doc)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):  # a shape the schema already refused
            pass
    # a refused key is gone from the sanitized data: nothing below it is checked, its siblings still are
    bad = {p.path for p in problems if not isinstance(p.value, Key)}
    refused_models = {str(p.value) for p in problems if p.path == "models" and isinstance(p.value, Key)}
    problems += [p for p in later if not _under(p.path, bad)
                 and not (re.fullmatch(r"services\[\d+\]\.model", p.path) and p.value in refused_models)]
    # the normalized data when the schema took it (callers use it only when there are no problems)
    return (doc if valid else {}), problems


def _under(path: str, bad: set[str]) -> bool:
    return any(path == b or path.startswith(b + ".") or path.startswith(b + "[") for b in bad)


def validate_all(hosts: list[tuple[str, dict]], groups: dict[str, list[str]] | None = None
                 ) -> tuple[dict[str, dict], list[Problem]]:
    """Validate every host, then what one host says of another (``rpc_workers``, rpc_links.py); returns the
    normalized data of the valid ones and all problems. ``groups``: the inventory's groups (name -> hosts), for
    ``rpc_workers`` entries that name a group."""
    docs: dict[str, dict] = {}
    problems: list[Problem] = []
    for name, data in hosts:
        doc, host_problems = validate_host(name, data)
        problems += host_problems
        if not host_problems:
            docs[name] = doc
    linked = link_rpc(docs, {name for name, _ in hosts}, groups)
    for host in {p.host for p in linked}:
        docs.pop(host, None)
    return docs, problems + linked
