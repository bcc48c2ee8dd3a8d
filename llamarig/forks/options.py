"""What differs between llama.cpp and ik_llama.cpp's llama-server, read in their sources.

Sources: llama.cpp as vendored by llama-cpp-python 0.3.36 (``common/arg.cpp``) and
ik_llama.cpp as vendored by ik-llama-cpp-python 0.1.5 (= ikawrakow/ik_llama.cpp
55d3c05b, ``common/common.cpp`` ``gpt_params_find_arg``). Differences that matter here:

- split modes: llama.cpp none/layer/row/tensor; ik none/layer/attn/graph;
- KV cache types: ik adds q6_0 and q8_KV;
- ``--jinja``: on by default in llama.cpp's server (``--no-jinja`` turns it off);
  off by default in ik, which has no ``--no-jinja``;
- mmap: ik has ``--no-mmap`` only (mmap is its default); llama.cpp's parser at
  0.3.36 replaced both with ``--load-mode``, older llama.cpp had ``--no-mmap``/``--mmap``:
  the installed ``--help`` decides (tasks/services.py checks every flag against it);
- ``--fit``: llama.cpp takes on|off (default on); ik's is a bare flag (default off)
  and refuses to combine with ``-ot``/``--n-cpu-moe``;
- ``--n-cpu-moe N``: llama.cpp moves the experts of layers 0..N-1 to the CPU; ik
  does the same with split mode graph/attn or one device, but with split mode
  layer over several devices shares N out among the devices in proportion to
  their layers and takes each device's highest-numbered layers;
- ik-only: ``-ger``, ``--merge-qkv``, ``-smgs``, ``-mea``, ``--max-gpu``, ``-mla``,
  ``-amb``, ``-rtr``, ``-no-fmoe``; llama.cpp-only: ``--reasoning``.
"""

from __future__ import annotations

FORKS = ("llama.cpp", "ik_llama.cpp")

SPLIT_MODES = {
    "llama.cpp": ("none", "layer", "row", "tensor"),
    "ik_llama.cpp": ("none", "layer", "attn", "graph"),
}

CACHE_TYPES = {
    "llama.cpp": ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"),
    "ik_llama.cpp": ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1", "q6_0", "q8_KV"),
}

# Service keys only one fork has (a value other than null for the other fork is a validation error).
ONLY_IN = {
    "reasoning": "llama.cpp",
    "grouped_expert_routing": "ik_llama.cpp",
    "merge_qkv": "ik_llama.cpp",
    "split_mode_graph_scheduling": "ik_llama.cpp",
    "max_extra_alloc": "ik_llama.cpp",
    "max_gpu": "ik_llama.cpp",
    "mla_use": "ik_llama.cpp",
    "attention_max_batch": "ik_llama.cpp",
    "run_time_repack": "ik_llama.cpp",
    "fused_moe": "ik_llama.cpp",
}

# Values a fork cannot express: (key, value) -> reason.
CANNOT = {
    "ik_llama.cpp": {
        ("mmap", True): "ik_llama.cpp has no --mmap (mmap is its default): leave mmap unset",
    },
}

# Spellings of the same option in each fork's parser: every alias -> the long name llamarig renders.
_COMMON_ALIASES = {
    "-m": "--model", "-a": "--alias", "-c": "--ctx-size", "-n": "--n-predict", "--predict": "--n-predict",
    "-ngl": "--n-gpu-layers", "--gpu-layers": "--n-gpu-layers", "-sm": "--split-mode", "-mg": "--main-gpu",
    "-ts": "--tensor-split", "-ot": "--override-tensor", "-cmoe": "--cpu-moe", "-ncmoe": "--n-cpu-moe",
    "-ctk": "--cache-type-k", "-ctv": "--cache-type-v", "-t": "--threads", "-tb": "--threads-batch",
    "-b": "--batch-size", "-ub": "--ubatch-size", "-np": "--parallel", "-fa": "--flash-attn", "-dev": "--device",
    "-cram": "--cache-ram", "-nkvo": "--no-kv-offload",
}
ALIASES = {
    "llama.cpp": {**_COMMON_ALIASES, "-fit": "--fit", "--temperature": "--temp", "-rea": "--reasoning",
                  "-ctxcp": "--ctx-checkpoints", "--swa-checkpoints": "--ctx-checkpoints",
                  "-kvu": "--kv-unified", "-no-kvu": "--no-kv-unified"},
    "ik_llama.cpp": {
        **_COMMON_ALIASES,
        "-ger": "--grouped-expert-routing", "-mqkv": "--merge-qkv", "-smgs": "--split-mode-graph-scheduling",
        "-mea": "--max-extra-alloc", "-mla": "--mla-use", "-amb": "--attention-max-batch",
        "-rtr": "--run-time-repack", "-no-fmoe": "--no-fused-moe",
    },
}


def canonical(fork: str, flag: str) -> str:
    """The long spelling llamarig renders for any alias of a flag (underscores read as dashes, as both parsers do)."""
    if flag.startswith("--"):
        flag = flag.replace("_", "-")
    return ALIASES[fork].get(flag, flag)


def fork_problems(fork: str, service: dict) -> list[tuple[str, object, str]]:
    """(key, value, expected) for each setting of a service the fork cannot take."""
    out = []
    for key, only in ONLY_IN.items():
        if service.get(key) is not None and only != fork:
            out.append((key, service[key], f"unset: {key} is an {only} setting and this rig builds {fork}"))
    if service.get("split_mode") is not None and service["split_mode"] not in SPLIT_MODES[fork]:
        out.append(("split_mode", service["split_mode"], f"one of {', '.join(SPLIT_MODES[fork])} ({fork})"))
    for key in ("cache_type_k", "cache_type_v"):
        if service.get(key) is not None and service[key] not in CACHE_TYPES[fork]:
            out.append((key, service[key], f"one of {', '.join(CACHE_TYPES[fork])} ({fork})"))
    for (key, value), reason in CANNOT.get(fork, {}).items():
        if service.get(key) == value:
            out.append((key, value, reason))
    if fork == "ik_llama.cpp" and service.get("fit") and (service.get("tensor_overrides") or service.get("n_cpu_moe") is not None):
        out.append(("fit", True, "fit unset: ik_llama.cpp refuses --fit together with tensor overrides or --n-cpu-moe"))
    return out
