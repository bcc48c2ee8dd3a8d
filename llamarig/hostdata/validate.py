"""Validate one host's data: the cerberus schema, then the cross-field rules.

``validate_host(name, data)`` returns ``(normalized, problems)``; a problem names
the host, the key path, the bad value and what was expected. Nothing here
raises on bad data: callers collect the problems of every host and print them
together (``format_problems``).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

from cerberus import Validator

from llamarig.forks.options import fork_problems
from llamarig.hostdata.schema import FOREIGN_KEY_PREFIXES, SCHEMA

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
        shown = "(missing)" if self.value is _MISSING else repr(self.value)
        return f"{self.host}: {self.path} = {shown}: expected {self.expected}"


def format_path(parts) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int) and out:
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _expected(rule: str | None, constraint: Any, info: tuple) -> str:
    if rule == "required":
        return "this key to be set"
    if rule == "type":
        kinds = constraint if isinstance(constraint, list) else [constraint]
        return "a value of type " + " or ".join(kinds)
    if rule == "nullable":
        return "a value (null is not allowed here)"
    if rule == "min":
        return f"a value >= {constraint}"
    if rule == "max":
        return f"a value <= {constraint}"
    if rule == "minlength":
        return f"at least {constraint} item(s)"
    if rule == "maxlength":
        return f"at most {constraint} item(s)"
    if rule == "allowed":
        return "one of " + ", ".join(map(str, constraint))
    if rule == "regex":
        return f"a string matching {constraint}"
    if rule == "empty":
        return "a non-empty value"
    if rule == "items":
        return f"exactly {len(constraint)} items"
    if rule in (None, "__unknown__"):
        return "a known key (see the README's data reference)"
    return f"{rule} {constraint!r}"


def _leaf_errors(errors):
    for error in errors:
        if error.is_group_error and error.child_errors:
            yield from _leaf_errors(error.child_errors)
        else:
            yield error


def _schema_problems(host: str, validator: Validator, data: dict) -> list[Problem]:
    problems = []
    for error in _leaf_errors(validator._errors):
        path = format_path(error.document_path)
        value = error.value if error.rule != "required" else _MISSING
        problems.append(Problem(host, path, value, _expected(error.rule, error.constraint, error.info)))
    return problems


def llamarig_keys(data: dict) -> dict:
    """The part of a host's data that is llamarig's (pyinfra's own keys dropped)."""
    return {k: v for k, v in data.items() if not str(k).startswith(FOREIGN_KEY_PREFIXES)}


def validate_host(host: str, data: dict) -> tuple[dict, list[Problem]]:
    data = llamarig_keys(data)
    validator = Validator(SCHEMA, allow_unknown=False)
    if not validator.validate(data):
        return {}, _schema_problems(host, validator, data)
    doc = validator.document
    return doc, cross_check(host, doc)


def service_gpus(doc: dict, service: dict) -> list[int]:
    """The rig GPU indices a service uses (null means all of the rig's)."""
    if service["gpus"] is None:
        return list(range(len(doc["gpus"])))
    return list(service["gpus"])


RESERVED_NAMES = {"power"}  # llamarig-power.service is the boot-time power unit
_DEVICE = re.compile(r"^(CPU|CUDA(\d+))$")
_ARCH = re.compile(r"^\d{2,3}[a-z]?(-real|-virtual)?$")


def cross_check(host: str, doc: dict) -> list[Problem]:
    problems: list[Problem] = []

    def bad(path, value, expected):
        problems.append(Problem(host, path, value, expected))

    n_gpus = len(doc["gpus"])

    archs = doc["build_cuda_architectures"]
    if isinstance(archs, str):
        if archs != "auto":
            bad("build_cuda_architectures", archs, "`auto` or a list of architectures such as [86, 89]")
    else:
        for i, arch in enumerate(archs):
            if not _ARCH.match(str(arch)):
                bad(f"build_cuda_architectures[{i}]", arch, "a CUDA architecture such as 86, 89 or 90a")

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
            bad(f"{where}.extra_args", svc["extra_args"],
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
            match = _DEVICE.match(device)
            devices = ["CPU"] + [f"CUDA{k}" for k in range(len(gpus))]
            if not match or (match.group(2) is not None and int(match.group(2)) >= len(gpus)):
                bad(f"{where}.tensor_overrides[{j}][1]", device, "a device of this service: " + ", ".join(devices))
    return problems


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
