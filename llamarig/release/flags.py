"""Turn one validated service, and the placement planned for it, into llama-server's argument list.

Every typed service key maps to exactly one flag here, in one table, so the
place a flag is computed is this file: units, the lock, ``llamarig plan`` and
``llamarig render`` all print what ``server_args`` returns. A planned placement
(``placement: auto``) is passed beside the declared service, never written into
it, and takes the place of the placement keys. Free-form ``extra_args`` come last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamarig.release import rpc


def _num(value: Any) -> str:
    """Numbers as llama.cpp users write them: 1 not 1.0, 0.95 not 0.9500."""
    if isinstance(value, bool):
        raise TypeError("boolean where a number was expected")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _csv(values: list) -> str:
    return ",".join(_num(v) for v in values)


# (service key, flag, how the value becomes the flag's argument); both forks spell these alike.
VALUE_FLAGS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("alias", "--alias", str),
    ("host", "--host", str),
    ("port", "--port", _num),
    ("ctx_size", "--ctx-size", _num),
    ("n_predict", "--n-predict", _num),
    ("n_gpu_layers", "--n-gpu-layers", _num),
    ("split_mode", "--split-mode", str),
    ("main_gpu", "--main-gpu", _num),
    ("tensor_split", "--tensor-split", _csv),
    ("n_cpu_moe", "--n-cpu-moe", _num),
    ("cache_type_k", "--cache-type-k", str),
    ("cache_type_v", "--cache-type-v", str),
    ("threads", "--threads", _num),
    ("threads_batch", "--threads-batch", _num),
    ("batch_size", "--batch-size", _num),
    ("ubatch_size", "--ubatch-size", _num),
    ("parallel", "--parallel", _num),
    ("flash_attn", "--flash-attn", str),
    ("reasoning", "--reasoning", str),
    ("reasoning_budget", "--reasoning-budget", _num),
    ("max_extra_alloc", "--max-extra-alloc", _num),
    ("max_gpu", "--max-gpu", _num),
    ("mla_use", "--mla-use", _num),
    ("attention_max_batch", "--attention-max-batch", _num),
]

# (service key, flag when true, flag when false), per fork; None: that value is the fork's
# default and renders nothing (llamarig/forks.py says where each fork differs).
BOOL_FLAGS: dict[str, list[tuple[str, str | None, str | None]]] = {
    "llama.cpp": [
        ("cpu_moe", "--cpu-moe", None),
        ("mmap", "--mmap", "--no-mmap"),
        ("jinja", "--jinja", "--no-jinja"),
    ],
    "ik_llama.cpp": [
        ("cpu_moe", "--cpu-moe", None),
        ("mmap", None, "--no-mmap"),
        ("jinja", "--jinja", None),
        ("fit", "--fit", None),
        ("grouped_expert_routing", "--grouped-expert-routing", None),
        ("merge_qkv", "--merge-qkv", None),
        ("split_mode_graph_scheduling", "--split-mode-graph-scheduling", None),
        ("run_time_repack", "--run-time-repack", None),
        ("fused_moe", None, "--no-fused-moe"),
    ],
}

SAMPLING_FLAGS: list[tuple[str, str]] = [
    ("temp", "--temp"),
    ("top_p", "--top-p"),
    ("top_k", "--top-k"),
    ("min_p", "--min-p"),
    ("repeat_penalty", "--repeat-penalty"),
]


def placement_values(flags, fork: str) -> dict:
    """The service keys a planned placement (``llamarig.planner.placement.Flags``) stands for."""
    return {
        "n_gpu_layers": flags.n_gpu_layers,
        "tensor_split": list(flags.tensor_split) if flags.tensor_split and flags.n_devices > 1 else None,
        "tensor_overrides": [list(p) for p in flags.overrides],
        "n_cpu_moe": None, "cpu_moe": None,
        # the plan is the placement: llama.cpp's start-up fit must not redo it
        "fit": False if fork == "llama.cpp" else None,
    }


def server_args(service: dict, model_path: str, fork: str = "llama.cpp", placement=None) -> list[str]:
    """llama-server arguments of a validated service for ``fork`` (no program name).

    ``placement``: the planned placement (``Flags``) of a ``placement: auto`` service, or None.
    """
    if placement is not None:
        service = {**service, **placement_values(placement, fork)}
        # the planner numbers a service's devices RPC first; llama.cpp names them RPC<k>[HOST:PORT] (rpc.py)
        service["tensor_overrides"] = [[p, rpc.to_llama(d, service)] for p, d in service["tensor_overrides"]]
    # --rpc before every --override-tensor: llama-server looks an override's device up as it parses it
    args = ["--model", model_path, *rpc.rpc_arg(service)]
    for key, flag, fmt in VALUE_FLAGS:
        value = service.get(key)
        if value is not None:
            args += [flag, fmt(value)]
    # One --override-tensor per pair, in the declared order: both parsers append them, first match wins.
    for pattern, device in service.get("tensor_overrides") or []:
        args += ["--override-tensor", f"{pattern}={device}"]
    for key, on, off in BOOL_FLAGS[fork]:
        value = service.get(key)
        flag = on if value else off
        if value is not None and flag:
            args.append(flag)
    if fork == "llama.cpp" and service.get("fit") is not None:
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


PLACEMENT_FLAGS = ("--n-gpu-layers", "--tensor-split", "--override-tensor", "--n-cpu-moe", "--cpu-moe", "--fit")


def placement_words(args: list[str]) -> list[str]:
    """The placement flags, with their values, in an argument list from ``server_args`` (for a one-line summary)."""
    words = []
    for i, word in enumerate(args):
        if word in PLACEMENT_FLAGS:
            takes_value = word != "--cpu-moe" and i + 1 < len(args)
            words += [word, args[i + 1]] if takes_value else [word]
    return words
