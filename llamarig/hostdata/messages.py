"""Schema errors in words: what was expected, with the allowed values, and the near miss a person meant.

cerberus reports a rule and its constraint; a person needs "one of on, off, auto" rather than
"a value of type string", a sentence rather than a regular expression, and "did you mean
`services`?" for `servcies`.
"""

from __future__ import annotations

import difflib
from typing import Any

import re

from cerberus import Validator, errors

from llamarig.hostdata import schema as S

# The words for each regular expression of the schema.
REGEX_WORDS = {
    S.NAME_REGEX: "a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, "
                  "at most 63 characters",
    S.REPO_REGEX: "a Hub repository OWNER/NAME such as unsloth/GLM-4.7-GGUF",
    S.ENV_NAME_REGEX: "an environment variable name: letters, digits and '_', not starting with a digit",
    S.CMAKE_OPTION_REGEX: "a CMake cache option -DNAME=VALUE such as -DGGML_CUDA_FA_ALL_QUANTS=ON",
    S.TARGET_REGEX: "a CMake target name such as llama-server",
    S.ABSOLUTE_REGEX: "an absolute path such as /opt/llamarig",
    S.HTTP_REGEX: "an http:// or https:// URL such as https://huggingface.co",
    S.USER_REGEX: "a user name of lower-case letters, digits, '-' and '_', such as llama",
}

_KINDS = {"string": "a string", "integer": "a whole number", "number": "a number", "boolean": "true or false "
          "(Python: True or False)", "list": "a list", "dict": "a mapping (a dict)"}


def rule_at(schema_path: tuple) -> dict | None:
    """The schema rule dict a cerberus error's schema path ends in (the path without its rule name)."""
    node: Any = S.SCHEMA
    for part in schema_path[:-1]:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return None
    return node if isinstance(node, dict) else None


def known_keys(schema_path: tuple) -> list[str]:
    """The keys the schema knows where an unknown key was found."""
    node = rule_at(tuple(schema_path) + ("x",)) if schema_path else None
    if not schema_path:
        return list(S.SCHEMA)
    if isinstance(node, dict) and isinstance(node.get("schema"), dict):
        inner = node["schema"]
        if "type" in inner and isinstance(inner.get("schema"), dict):  # a list of dicts
            return list(inner["schema"])
        return list(inner)
    return []


def near(word: str, choices) -> str:
    """' (did you mean X?)' for the closest choice, or ''."""
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {found[0]}?)" if found else ""


def expected(error, fork: str) -> str:
    rule, constraint = error.rule, error.constraint
    field = rule_at(error.schema_path) or {}
    if rule == "required":
        return "this key to be set"
    if rule == "type":
        kinds = constraint if isinstance(constraint, list) else [constraint]
        words = " or ".join(_KINDS.get(k, k) for k in kinds)
        allowed = _allowed(field, error.document_path, fork)
        if allowed:
            return f"one of {', '.join(map(str, allowed))}" + (" or null" if field.get("nullable") else "")
        if isinstance(error.value, bool) and ("integer" in kinds or "number" in kinds):
            return f"{words}, not true or false"
        if isinstance(error.value, str) and ("integer" in kinds or "number" in kinds):
            return f"{words} without quotes"
        return words
    if rule == "nullable":
        return "a value (null is not allowed here)"
    if rule == "min":
        return f"a value of at least {constraint}"
    if rule == "max":
        return f"a value of at most {constraint}"
    if rule == "minlength":
        return f"at least {constraint} item(s)"
    if rule == "maxlength":
        return f"at most {constraint} item(s)"
    if rule == "allowed":
        allowed = _allowed(field, error.document_path, fork) or constraint
        return f"one of {', '.join(map(str, allowed))}" + near(error.value, allowed)
    if rule == "regex":
        return REGEX_WORDS.get(constraint, f"a string of the form {constraint}")
    if rule == "empty":
        return "a non-empty value"
    if rule == "items":
        return f"a pair of {len(constraint)} items"
    if rule in (None, "__unknown__") or rule.startswith("__unknown"):
        key = error.document_path[-1] if error.document_path else ""
        return "a known key (see the README's data reference)" + near(key, known_keys(error.schema_path[:-1]))
    return f"{rule} {constraint!r}"


def _allowed(field: dict, document_path: tuple, fork: str) -> list | None:
    allowed = field.get("allowed")
    if not allowed:
        return None
    key = document_path[-1] if document_path else ""
    if key in ("cache_type_k", "cache_type_v"):
        from llamarig.forks.options import CACHE_TYPES
        return list(CACHE_TYPES.get(fork, allowed))
    if key == "split_mode":
        from llamarig.forks.options import SPLIT_MODES
        return list(SPLIT_MODES.get(fork, allowed))
    return list(allowed)


class StrictValidator(Validator):
    """cerberus with two habits of Python's fixed: true is not a number, and a pattern matches the whole string
    (cerberus appends '$', which lets a trailing newline through)."""

    types_mapping = dict(Validator.types_mapping)

    def _validate_regex(self, pattern, field, value):
        """{'type': 'string'}"""
        if isinstance(value, str) and not re.fullmatch(pattern.removesuffix("$").removeprefix("^"), value):
            self._error(field, errors.REGEX_MISMATCH)


def _strict_types():
    from cerberus import TypeDefinition
    StrictValidator.types_mapping["integer"] = TypeDefinition("integer", (int,), (bool,))
    StrictValidator.types_mapping["number"] = TypeDefinition("number", (int, float), (bool,))


_strict_types()
