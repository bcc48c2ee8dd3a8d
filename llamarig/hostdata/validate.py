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
            path, value = format_path(error.document_path[:-1]), Key(error.document_path[-1])
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


def control_problems(host: str, data, path: tuple = ()) -> list[Problem]:
    """Every string (key or value) holding a control character, anywhere in the host data."""
    out = []
    if isinstance(data, str):
        why = values.control_character(data)
        if why:
            out.append(Problem(host, format_path(path) or "(top level)", data, why))
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and values.control_character(key):
                out.append(Problem(host, format_path(path) or "(top level)", Key(key), values.control_character(key)))
                continue
            out += control_problems(host, value, path + (key,))
    elif isinstance(data, (list, tuple)):
        for i, value in enumerate(data):
            out += control_problems(host, value, path + (i,))
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
    bad = {p.path for p in problems}
    problems += [p for p in _schema_problems(host, validator, fork) if p.path not in bad]
    doc = validator.document if valid else _sanitized(validator)
    try:
        later = cross_check(host, doc) + value_problems(host, doc)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):  # a shape the schema already refused
        later = []
    bad = {p.path for p in problems}
    problems += [p for p in later if not _under(p.path, bad)]
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
    for i, package in enumerate(doc["build_packages"]):
        each(f"build_packages[{i}]", package, values.debian_package)
    each("power_limit_w", doc["power_limit_w"], values.power_limit)
    for index, watts in doc["power_limits_w"].items():
        each(f"power_limits_w[{index}]", watts, values.power_limit)
    for name, model in doc["models"].items():
        each(f"models.{name}.revision", model["revision"], values.git_ref)
        each(f"models.{name}.file", model["file"], values.relative_path)
        for j, pattern in enumerate(model["include"] or []):
            if ".." in pattern.split("/") or pattern.startswith("/"):
                check(f"models.{name}.include[{j}]", pattern, "a pattern inside the repository (relative, no '..')")
    for i, svc in enumerate(doc["services"]):
        where = f"services[{i}]"
        each(f"{where}.host", svc["host"], values.bind_address)
        each(f"{where}.port", svc["port"], values.service_port)
        for j, arg in enumerate(svc["extra_args"]):
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

    n_gpus = len(doc["gpus"])

    archs = doc["build_cuda_architectures"]
    if isinstance(archs, str):
        if archs != "auto":
            bad("build_cuda_architectures", archs, "`auto` or a list of architectures such as [86, 89]")
    elif not archs:
        bad("build_cuda_architectures", archs, "`auto` or at least one architecture such as [86]")
    else:
        for i, arch in enumerate(archs):
            why = values.cuda_architecture(arch)
            if why:
                bad(f"build_cuda_architectures[{i}]", arch, why)

    if "llama-server" not in doc["build_targets"]:
        bad("build_targets", doc["build_targets"], "a list that includes llama-server")

    if doc["power_limit_w"] is not None and n_gpus == 0:
        bad("power_limit_w", doc["power_limit_w"], "null on a rig without GPUs")
    for index in doc["power_limits_w"]:
        if index >= n_gpus:
            bad(f"power_limits_w[{index}]", doc["power_limits_w"][index],
                f"a GPU index below {n_gpus} (the rig declares {n_gpus} GPU(s))")

    for name, model in doc["models"].items():
        if model["file"] is not None and not any(fnmatch.fnmatchcase(model["file"], pat) for pat in model["include"]):
            bad(f"models.{name}.file", model["file"], f"a file matched by include {model['include']}")
        if model["file"] is not None and not model["file"].endswith(".gguf"):
            bad(f"models.{name}.file", model["file"], "a .gguf file")

    seen_names: dict[str, int] = {}
    seen_ports: dict[int, int] = {}
    used_gpus: dict[int, int] = {}
    for i, svc in enumerate(doc["services"]):
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
    if svc["model"] not in doc["models"]:
        declared = ", ".join(sorted(doc["models"])) or "none"
        bad(f"{where}.model", svc["model"], f"a model declared under `models` (declared: {declared})")

    gpus = svc["gpus"] if svc["gpus"] is not None else list(range(n_gpus))
    for j, index in enumerate(gpus):
        if index >= n_gpus:
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

    if svc["tensor_split"] is not None and len(svc["tensor_split"]) != len(gpus):
        bad(f"{where}.tensor_split", svc["tensor_split"], f"{len(gpus)} proportion(s), one per service GPU")
    if svc["tensor_split"] is not None and not any(svc["tensor_split"]):
        bad(f"{where}.tensor_split", svc["tensor_split"], "at least one non-zero proportion")
    if svc["main_gpu"] is not None and svc["main_gpu"] >= max(len(gpus), 1):
        bad(f"{where}.main_gpu", svc["main_gpu"], f"an index below {len(gpus)} into the service's GPUs")

    if svc["api_key_env"] and svc["api_key_file"]:
        bad(f"{where}.api_key_file", svc["api_key_file"], "null when api_key_env is set (one source per key)")
    if any(a.split("=", 1)[0] in ("--api-key", "--api-key-file") for a in svc["extra_args"]):
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
        for arg in svc["extra_args"]:
            if arg.split("=", 1)[0] in PLACEMENT_FLAGS:
                bad(f"{where}.extra_args", arg, "no placement flag with placement: auto (the planner sets them)")
    for key, value, expected in fork_problems(doc["build_fork"], svc):
        bad(f"{where}.{key}", value, expected)

    for j, (pattern, device) in enumerate(svc["tensor_overrides"]):
        try:
            re.compile(pattern)
        except re.error as exc:
            bad(f"{where}.tensor_overrides[{j}][0]", pattern, f"a regular expression that compiles ({exc})")
        if "=" in pattern or "," in pattern:
            bad(f"{where}.tensor_overrides[{j}][0]", pattern, "a pattern without '=' or ',' (llama-server splits on them)")
        match = _DEVICE.fullmatch(device)
        devices = ["CPU"] + [f"CUDA{k}" for k in range(len(gpus))]
        if not match or (match.group(2) is not None and int(match.group(2)) >= len(gpus)):
            bad(f"{where}.tensor_overrides[{j}][1]", device, "a device of this service: " + ", ".join(devices))


def _masked_args(args: list[str]) -> str:
    """extra_args as written, with the value of every --api-key replaced by ***."""
    out, hide = [], False
    for arg in args:
        flag = arg.split("=", 1)[0]
        if hide:
            out.append("***")
        elif flag == "--api-key" and "=" in arg:
            out.append("--api-key=***")
        else:
            out.append(arg)
        hide = arg == "--api-key"
    return "[" + ", ".join(repr(a) if a != "***" and not a.endswith("=***") else a for a in out) + "]"


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
