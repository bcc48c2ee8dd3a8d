"""Turn one validated service into llama-server's argument list.

Every typed service key maps to exactly one flag here, in one table, so the
place a flag is computed is this file. Free-form ``extra_args`` come last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _num(value: Any) -> str:
    """Numbers as llama.cpp users write them: 1 not 1.0, 0.95 not 0.9500."""
    if isinstance(value, bool):
        raise TypeError("boolean where a number was expected")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _csv(values: list) -> str:
    return ",".join(_num(v) for v in values)


# (service key, flag, how the value becomes the flag's argument)
VALUE_FLAGS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("alias", "--alias", str),
    ("host", "--host", str),
    ("port", "--port", _num),
    ("ctx_size", "--ctx-size", _num),
    ("n_gpu_layers", "--n-gpu-layers", _num),
    ("split_mode", "--split-mode", str),
    ("main_gpu", "--main-gpu", _num),
    ("tensor_split", "--tensor-split", _csv),
    ("cache_type_k", "--cache-type-k", str),
    ("cache_type_v", "--cache-type-v", str),
    ("threads", "--threads", _num),
    ("threads_batch", "--threads-batch", _num),
    ("batch_size", "--batch-size", _num),
    ("ubatch_size", "--ubatch-size", _num),
    ("parallel", "--parallel", _num),
    ("flash_attn", "--flash-attn", str),
]

# (service key, flag when true, flag when false)
BOOL_FLAGS: list[tuple[str, str, str]] = [
    ("mmap", "--mmap", "--no-mmap"),
    ("jinja", "--jinja", "--no-jinja"),
]

SAMPLING_FLAGS: list[tuple[str, str]] = [
    ("temp", "--temp"),
    ("top_p", "--top-p"),
    ("top_k", "--top-k"),
    ("min_p", "--min-p"),
    ("repeat_penalty", "--repeat-penalty"),
]


def server_args(service: dict, model_path: str) -> list[str]:
    """llama-server arguments for a validated service (no program name)."""
    args = ["--model", model_path]
    for key, flag, fmt in VALUE_FLAGS:
        value = service.get(key)
        if value is not None:
            args += [flag, fmt(value)]
    for pattern, device in service.get("tensor_overrides") or []:
        args += ["--override-tensor", f"{pattern}={device}"]
    for key, on, off in BOOL_FLAGS:
        value = service.get(key)
        if value is not None:
            args.append(on if value else off)
    if service.get("fit") is not None:
        args += ["--fit", "on" if service["fit"] else "off"]
    sampling = service.get("sampling") or {}
    for key, flag in SAMPLING_FLAGS:
        if sampling.get(key) is not None:
            args += [flag, _num(sampling[key])]
    args += list(service.get("extra_args") or [])
    return args


def flag_names(args: list[str]) -> list[str]:
    """The flags (words starting with '-' that are not negative numbers) in an argument list."""
    out = []
    for word in args:
        if word.startswith("-") and not _is_number(word):
            out.append(word.split("=", 1)[0])
    return out


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
