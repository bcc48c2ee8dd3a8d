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
    S.WORKER_REGEX: "a host of the inventory, or HOST/NAME of one of its rpc_servers, such as garage/gpu1",
    S.USER_REGEX: "a user name of lower-case letters, digits, '-' and '_', at most 32 characters, such as llama",
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
    """' (did you mean X?)' for the closest choice (any case), or ''; for a key, also the key a shorter or
    longer spelling names (`temperature` -> temp, `jobs` -> build_jobs)."""
    choices = [str(c) for c in choices]
    by_lower = {c.lower(): c for c in reversed(choices)}
    word = str(word)
    found = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    if found:
        return f" (did you mean {by_lower[found[0]]}?)"
    parts = [c for c in choices if c.endswith("_" + word) or c.startswith(word + "_")
             or (len(c) >= 4 and word.startswith(c))]
    return f" (did you mean {parts[0]}?)" if len(parts) == 1 else ""


# Type errors whose words are the key's own values rather than a type.
TYPE_WORDS = {
    "build_cuda_architectures": "`auto` or a list of architectures such as [86, 89]",
}
_NULL_WORDS = ("none", "null", "nil", "~")
_BOOL_WORDS = {"yes": True, "on": True, "true": True, "y": True, "1": True,
               "no": False, "off": False, "false": False, "n": False, "0": False}


def _null_hint(field: dict, value) -> str:
    """For a nullable key given the string 'None' (or 'null'): the null it meant."""
    if field.get("nullable") and isinstance(value, str) and value.strip().lower() in _NULL_WORDS:
        return f", or null (Python None, not the string {value!r})"
    return ""


def _type_words(error, field: dict, fork: str) -> str:
    kinds = error.constraint if isinstance(error.constraint, list) else [error.constraint]
    words = " or ".join(_KINDS.get(k, k) for k in kinds)
    value = error.value
    key = error.document_path[-1] if error.document_path else ""
    if key in TYPE_WORDS and len(error.document_path) == 1:
        return TYPE_WORDS[key] + (f" (a list even for one: [{value}])" if isinstance(value, int) else "")
    allowed = _allowed(field, error.document_path, fork)
    if allowed:
        out = f"one of {', '.join(map(str, allowed))}" + (" or null" if field.get("nullable") else "")
        if isinstance(value, bool) and ("on" if value else "off") in allowed:
            out += f" (a string: write {'on' if value else 'off'!r}, not {value})"
        return out
    if isinstance(value, bool) and ("integer" in kinds or "number" in kinds):
        return f"{words}, not true or false"
    if isinstance(value, str) and ("integer" in kinds or "number" in kinds):
        unit = " or a unit" if re.fullmatch(r"\s*-?[\d.]+\s*[A-Za-z]+", value) else ""  # '24GB', '350W'
        return f"{words} without quotes{unit}" + _null_hint(field, value)
    if kinds == ["boolean"] and isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return f"{words}: write {_BOOL_WORDS[value.strip().lower()]}, not {value!r}"
    if kinds == ["boolean"] and type(value) is int and value in (0, 1):
        return f"{words}: write {bool(value)}, not {value}"
    if kinds == ["string"] and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{words} (in quotes: {str(value)!r})"
    if kinds == ["dict"] and isinstance(value, str) and "repo" in (field.get("schema") or {}):
        return f"a mapping (a dict) such as {{'repo': {value!r}}}"
    if kinds == ["dict"] and isinstance(value, list) and (field.get("keysrules") or {}).get("type") == "integer":
        return f"a mapping (a dict) by GPU index, such as {dict(enumerate(value))!r}"[:200]
    if kinds == ["dict"] and isinstance(value, list) and (field.get("valuesrules") or {}).get("type") == "dict":
        return "a mapping (a dict) by name, such as {'NAME': {...}}"
    if (kinds == ["dict"] and isinstance(value, list) and value
            and all(isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*=.*", v) for v in value)):  # ['A=1']
        return f"a mapping (a dict), such as {dict(v.split('=', 1) for v in value)!r}"[:200]
    if kinds == ["list"]:
        inner = field.get("schema") if isinstance(field.get("schema"), dict) else {}
        if isinstance(value, dict) and inner.get("type") == "dict":
            if set(value) <= set(inner.get("schema", {})):  # one entry, written without its list
                return ("a list: write [{...}] even for one entry (in Python, ({...}) without a trailing comma "
                        "is not a tuple)")
            return "a list of mappings [{...}, {...}], not a mapping of them"
        if isinstance(value, str) and "items" in field and "=" in value:
            return f"a pair [pattern, device] such as {value.rsplit('=', 1)!r}"
        if isinstance(value, str) and inner.get("type") == "string":
            return f"a list, such as {value.split() or [value]!r}"
        numbers = inner.get("type") in ("integer", "number")
        if numbers and isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?(\s*[,; ]\s*\d+(\.\d+)?)*\s*", value):
            items = [float(x) if "." in x else int(x) for x in re.split(r"\s*[,; ]\s*", value.strip())]
            return f"a list, such as {items!r}"  # '1,1' for --tensor-split 1,1
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"a list, such as [{value!r}]"
    return words


def expected(error, fork: str) -> str:
    rule, constraint = error.rule, error.constraint
    field = rule_at(error.schema_path) or {}
    if rule == "required":
        return "this key to be set"
    if rule == "type":
        return _type_words(error, field, fork)
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
        if len(allowed) == 1:
            return f"{allowed[0]}" + (" or null" if field.get("nullable") else "") + near(error.value, allowed)
        return f"one of {', '.join(map(str, allowed))}" + near(error.value, allowed)
    if rule == "regex":
        words = REGEX_WORDS.get(constraint, f"a string of the form {constraint}") + _null_hint(field, error.value)
        guess = re.sub(r"\s+", "-", str(error.value).strip().lower())
        if constraint in (S.NAME_REGEX, S.USER_REGEX) and guess != error.value and re.fullmatch(constraint, guess):
            words += f" (did you mean {guess}?)"
        url = re.fullmatch(r"https?://[^/]+/([\w.-]+/[\w.-]+)/?", str(error.value))  # the repository's page
        if constraint == S.REPO_REGEX and url:
            words += f" (did you mean {url.group(1)}?)"
        return words
    if rule == "empty":
        return "a non-empty value"
    if rule == "items":
        return f"a pair of {len(constraint)} items"
    if rule in (None, "__unknown__") or rule.startswith("__unknown"):
        key = error.document_path[-1] if error.document_path else ""
        known = known_keys(error.schema_path[:-1])
        flat = [k for k in known if k.startswith(f"{key}_")]
        if isinstance(error.value, dict) and len(flat) > 1:  # `build = {"ref": ...}`: an area's keys are flat
            return f"a known key (see the README's data reference; keys are flat: {', '.join(flat)})"
        return "a known key (see the README's data reference)" + near(key, known)
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
