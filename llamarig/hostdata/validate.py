"""Validate one host's data: the cerberus schema, then the cross-field rules.

``validate_host(name, data)`` returns ``(normalized, problems)``; a problem names
the host, the key path, the bad value and what was expected. Nothing here
raises on bad data: callers collect the problems of every host and print them
together (``format_problems``).
"""

from __future__ import annotations

import copy
import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from llamarig.forks.options import fork_problems
from llamarig.hostdata import messages, values
from llamarig.hostdata.schema import FOREIGN_KEY_PREFIXES, FORKS, SCHEMA

_MISSING = object()
PLACEMENT_FLAGS = ("-ngl", "--gpu-layers", "--n-gpu-layers", "-ts", "--tensor-split", "-ot", "--override-tensor",
                   "-ncmoe", "--n-cpu-moe", "-cmoe", "--cpu-moe", "--fit", "-fit")


@dataclass(frozen=True)
class Problem:
    host: str
    path: str
    value: Any
    expected: str

    def __str__(self) -> str:
        shown = "(missing)" if self.value is _MISSING else _short(repr(self.value))
        return f"{self.host}: {self.path} = {shown}: expected {self.expected}"


class Key(str):
    """A mapping's key shown as one (the value of a problem about the key itself)."""

    def __repr__(self) -> str:
        return f"key {str.__repr__(self)}"


class Masked(str):
    """A value whose secret part is replaced, shown as written."""

    def __repr__(self) -> str:
        return str(self)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit - 5] + " ...]" if text.endswith("]") else text[:limit - 4] + " ..."


def format_path(parts) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int) and out:
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


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


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW", re.I)


def _api_key_flag(arg) -> bool:
    """An extra_args item that is --api-key or --api-key-file, however its value is attached."""
    return isinstance(arg, str) and re.split(r"[=\s]", arg.strip(), maxsplit=1)[0] in ("--api-key", "--api-key-file")


def _secret_arg(args, j: int) -> bool:
    """extra_args[j] is an API key, or holds one (never shown)."""
    arg = args[j]
    if not isinstance(arg, str):
        return False
    return (j > 0 and isinstance(args[j - 1], str) and args[j - 1].strip() == "--api-key") or (
        re.split(r"[=\s]", arg.strip(), maxsplit=1)[0] == "--api-key" and arg.strip() != "--api-key")


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


def value_problems(host: str, doc: dict) -> list[Problem]:
    """Single values the data alone shows a deploy would refuse (llamarig/hostdata/values.py)."""
    out = []

    def check(path, value, why):
        if why:
            out.append(Problem(host, path, value, why))

    def each(path, value, rule, *args):
        if value is None:
            return  # unset, or refused by the schema already
        try:
            check(path, value, rule(value, *args))
        except (TypeError, ValueError, AttributeError):
            pass  # a shape the schema refused

    each("build_git_url", doc["build_git_url"], values.git_url)
    each("build_ref", doc["build_ref"], values.git_ref)
    for key in ("build_root", "models_dir"):
        each(key, doc[key], values.absolute_path)
    each("build_ccache_dir", doc["build_ccache_dir"], values.absolute_path)
    each("hub_endpoint", doc["hub_endpoint"], values.http_url)
    each("hub_client", doc["hub_client"], values.pip_requirement, "huggingface_hub")
    each("hub_token_file", doc["hub_token_file"], values.not_null_word)
    for i, package in enumerate(doc["build_packages"] or []):  # None: refused by the schema
        each(f"build_packages[{i}]", package, values.debian_package)
    each("power_limit_w", doc["power_limit_w"], values.power_limit)
    for index, watts in (doc["power_limits_w"] or {}).items():
        each(f"power_limits_w[{index}]", watts, values.power_limit)
    for name, model in (doc["models"] or {}).items():
        if not isinstance(model, dict):
            continue  # refused by the schema
        each(f"models.{name}.repo", model["repo"], values.hub_repo)
        each(f"models.{name}.revision", model["revision"], values.git_ref)
        each(f"models.{name}.file", model["file"], values.relative_path)
        for j, pattern in enumerate(model["include"] or []):
            if isinstance(pattern, str) and (".." in pattern.split("/") or pattern.startswith("/")):
                check(f"models.{name}.include[{j}]", pattern, "a pattern inside the repository (relative, no '..')")
    for i, svc in enumerate(doc["services"] or []):
        if not isinstance(svc, dict):
            continue  # refused by the schema
        where = f"services[{i}]"
        each(f"{where}.host", svc["host"], values.bind_address)
        for key in ("host", "api_key_file"):
            each(f"{where}.{key}", svc[key], values.not_null_word)
        each(f"{where}.port", svc["port"], values.service_port)
        for j, arg in enumerate(svc["extra_args"]):
            if not (_api_key_flag(arg) or _secret_arg(svc["extra_args"], j)):  # reported, masked, by cross_check
                each(f"{where}.extra_args[{j}]", arg, values.extra_arg)
        for key in svc["environment"]:
            each(f"{where}.environment", Key(key), values.environment_key)
    return out


def service_gpus(doc: dict, service: dict) -> list[int]:
    """The rig GPU indices a service uses (null means all of the rig's)."""
    if service["gpus"] is None:
        return list(range(len(doc["gpus"])))
    return list(service["gpus"])


RESERVED_NAMES = {"power"}  # llamarig-power.service is the boot-time power unit
_DEVICE = re.compile(r"(CPU|CUDA(\d+))")


def cross_check(host: str, doc: dict) -> list[Problem]:
    problems: list[Problem] = []

    def bad(path, value, expected):
        problems.append(Problem(host, path, value, expected))

    # Whatever the schema refused as a whole is None here: the rules that need it are skipped.
    n_gpus = len(doc["gpus"]) if isinstance(doc["gpus"], list) else None

    archs = doc["build_cuda_architectures"]
    if isinstance(archs, str):
        if archs != "auto":
            items = [a.strip() for a in re.split(r"[,;\s]+", archs.strip()) if a.strip()]
            hint = " (did you mean auto?)" if archs.strip().lower() == "auto" else ""
            if items and all(values.cuda_architecture(a) is None for a in items):  # '86' or '86;89'
                hint = f" (a list even for one: {[int(a) if a.isdigit() else a for a in items]!r})"
            bad("build_cuda_architectures", archs, "`auto` or a list of architectures such as [86, 89]" + hint)
    elif not archs:
        bad("build_cuda_architectures", archs, "`auto` or at least one architecture such as [86]")
    else:
        for i, arch in enumerate(archs):
            why = values.cuda_architecture(arch)
            if why:
                bad(f"build_cuda_architectures[{i}]", arch, why)

    targets = doc["build_targets"]
    if isinstance(targets, list) and all(isinstance(t, str) for t in targets) and "llama-server" not in targets:
        bad("build_targets", doc["build_targets"], "a list that includes llama-server")

    if doc["service_user"] == "root":
        bad("service_user", doc["service_user"], "a user other than root (the hardened units run the servers unprivileged)")

    if doc["power_limit_w"] is not None and n_gpus == 0:
        bad("power_limit_w", doc["power_limit_w"], "null on a rig without GPUs")
    for index in doc["power_limits_w"] or {}:
        if n_gpus is not None and index >= n_gpus:
            bad(f"power_limits_w[{index}]", doc["power_limits_w"][index],
                f"a GPU index below {n_gpus} (the rig declares {n_gpus} GPU(s))")

    for name, model in (doc["models"] or {}).items():
        if not isinstance(model, dict):
            continue  # refused by the schema
        if model["file"] is not None and all(isinstance(pat, str) for pat in model["include"]) and not any(
                fnmatch.fnmatchcase(model["file"], pat) for pat in model["include"]):
            bad(f"models.{name}.file", model["file"], f"a file matched by include {model['include']}")
        if model["file"] is not None and not model["file"].endswith(".gguf"):
            bad(f"models.{name}.file", model["file"], "a .gguf file")

    seen_names: dict[str, int] = {}
    seen_ports: dict[int, int] = {}
    used_gpus: dict[int, int] = {}
    for i, svc in enumerate(doc["services"] or []):
        try:
            _service_rules(doc, i, svc, bad, seen_names, seen_ports, used_gpus, n_gpus)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError):
            continue  # a shape the schema refused: its problems are reported already
    return problems


def _service_rules(doc, i, svc, bad, seen_names, seen_ports, used_gpus, n_gpus) -> None:
    """The cross-field rules of one service (``bad`` records a problem)."""
    where = f"services[{i}]"
    if svc["name"] in seen_names:
        bad(f"{where}.name", svc["name"], f"a name no other service of this rig has (services[{seen_names[svc['name']]}] has it)")
    seen_names.setdefault(svc["name"], i)
    if svc["name"] in RESERVED_NAMES:
        bad(f"{where}.name", svc["name"], f"a name other than {', '.join(sorted(RESERVED_NAMES))} (llamarig's own units use them)")
    if svc["port"] in seen_ports:
        bad(f"{where}.port", svc["port"], f"a port no other service of this rig uses (services[{seen_ports[svc['port']]}] has it)")
    seen_ports.setdefault(svc["port"], i)
    if doc["models"] is not None and svc["model"] not in doc["models"]:
        declared = ", ".join(sorted(doc["models"])) or "none"
        bad(f"{where}.model", svc["model"], f"a model declared under `models` (declared: {declared})")

    gpus = svc["gpus"] if svc["gpus"] is not None else list(range(n_gpus)) if n_gpus is not None else None
    if gpus is not None and not all(isinstance(g, int) for g in gpus):
        gpus = None  # the schema refused an index
    if gpus is None:  # unknown: the rules that need the service's GPUs are skipped
        _service_rules_without_gpus(doc, where, svc, bad)
        return
    for j, index in enumerate(gpus):
        if n_gpus is not None and index >= n_gpus:
            bad(f"{where}.gpus[{j}]", index, f"a GPU index below {n_gpus} (the rig declares {n_gpus} GPU(s))")
    if len(set(gpus)) != len(gpus):
        bad(f"{where}.gpus", gpus, "each GPU at most once")
    for index in gpus:
        other = used_gpus.get(index)
        if other is not None and not (svc["shared_gpus"] and doc["services"][other]["shared_gpus"]):
            bad(f"{where}.gpus", gpus,
                f"GPUs not used by another service, or shared_gpus: true on both (GPU {index} is also in services[{other}])")
            break
    for index in gpus:
        used_gpus.setdefault(index, i)

    split = svc["tensor_split"]
    if split is not None and not all(isinstance(x, (int, float)) for x in split):
        split = None  # the schema refused an item
    if split is not None and len(split) != len(gpus):
        bad(f"{where}.tensor_split", split, f"{len(gpus)} proportion(s), one per service GPU")
    if split is not None and not any(split):
        bad(f"{where}.tensor_split", svc["tensor_split"], "at least one non-zero proportion")
    if svc["main_gpu"] is not None and svc["main_gpu"] >= max(len(gpus), 1):
        bad(f"{where}.main_gpu", svc["main_gpu"], f"an index below {len(gpus)} into the service's GPUs")
    _service_rules_without_gpus(doc, where, svc, bad)
    _tensor_override_rules(where, svc, gpus, bad)


def _service_rules_without_gpus(doc, where, svc, bad) -> None:
    """The rules of one service that do not depend on its GPUs."""
    if svc["api_key_env"] and svc["api_key_file"]:
        bad(f"{where}.api_key_file", svc["api_key_file"], "null when api_key_env is set (one source per key)")
    args = [a for a in svc["extra_args"] if isinstance(a, str)]  # the schema refused the others
    if any(_api_key_flag(a) for a in args):
        bad(f"{where}.extra_args", Masked(_masked_args(svc["extra_args"])),
            "no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)")
    if svc["placement"] == "auto":
        for key in ("n_gpu_layers", "tensor_split", "n_cpu_moe", "cpu_moe", "fit"):
            if svc[key] not in (None, False) and not (key == "fit" and svc[key] is False):
                bad(f"{where}.{key}", svc[key], "null with placement: auto (the planner sets the placement)")
        if svc["tensor_overrides"]:
            bad(f"{where}.tensor_overrides", svc["tensor_overrides"], "[] with placement: auto (the planner sets them)")
        if svc["split_mode"] not in (None, "layer"):
            bad(f"{where}.split_mode", svc["split_mode"], "null or layer with placement: auto (the planner splits by layer)")
        if svc["ctx_size"] is None:
            bad(f"{where}.ctx_size", None, "a context size with placement: auto (the KV cache is planned for it)")
        for arg in args:
            if arg.split("=", 1)[0] in PLACEMENT_FLAGS:
                bad(f"{where}.extra_args", arg, "no placement flag with placement: auto (the planner sets them)")
    if doc["build_fork"] in FORKS:  # else refused by the schema: the fork is unknown
        for key, value, expected in fork_problems(doc["build_fork"], svc):
            bad(f"{where}.{key}", value, expected)


def _tensor_override_rules(where, svc, gpus, bad) -> None:
    for j, pair in enumerate(svc["tensor_overrides"]):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            continue  # refused by the schema
        pattern, device = pair
        try:
            re.compile(pattern)
        except re.error as exc:
            bad(f"{where}.tensor_overrides[{j}][0]", pattern, f"a regular expression that compiles ({exc})")
        if "=" in pattern or "," in pattern:
            bad(f"{where}.tensor_overrides[{j}][0]", pattern, "a pattern without '=' or ',' (llama-server splits on them)")
        match = _DEVICE.fullmatch(device)
        devices = ["CPU"] + [f"CUDA{k}" for k in range(len(gpus))]
        if not match or (match.group(2) is not None and int(match.group(2)) >= len(gpus)):
            hint = messages.near(device, devices) if device.upper() in devices else ""  # llama-server compares exactly
            bad(f"{where}.tensor_overrides[{j}][1]", device, "a device of this service: " + ", ".join(devices) + hint)


def _masked_args(args: list) -> str:
    """extra_args as written, with the value of every --api-key replaced by ***."""
    out = []
    for j, arg in enumerate(args):
        if _secret_arg(args, j):
            flag = re.split(r"[=\s]", arg.strip(), maxsplit=1)[0]
            out.append("***" if flag != "--api-key" else "--api-key=***" if "=" in arg else "--api-key ***")
        else:
            out.append(repr(arg) if isinstance(arg, str) else "...")  # an item the schema refused (reported)
    return "[" + ", ".join(out) + "]"


def format_problems(problems: list[Problem]) -> str:
    lines = [f"llamarig: {len(problems)} problem(s) in the host data:"]
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def validate_all(hosts: list[tuple[str, dict]]) -> tuple[dict[str, dict], list[Problem]]:
    """Validate every host; returns the normalized data of the valid ones and all problems."""
    docs: dict[str, dict] = {}
    problems: list[Problem] = []
    for name, data in hosts:
        doc, host_problems = validate_host(name, data)
        problems += host_problems
        if not host_problems:
            docs[name] = doc
    return docs, problems
