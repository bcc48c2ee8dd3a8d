"""The data model: every host-data key llamarig reads, as one cerberus schema.

Top-level keys are flat and prefixed by area (``build_``, ``hub_``, ``power_``,
``verify_``) because pyinfra merges host, group and ``all`` data one key at a
time: a rig that sets ``build_ref`` keeps every other ``build_*`` default.
Their defaults live in ``group_data/all.py``; a test checks that file names
exactly these keys. Entries of ``models`` and ``services`` get their defaults
from this schema (cerberus normalisation), so a service states only what differs.

Each rule carries ``meta: {"doc": ..., "example": ...}``; the README's data
reference is generated from it (``python -m llamarig.hostdata.refdoc``).
"""

from __future__ import annotations

from llamarig.forks.options import CACHE_TYPES as _FORK_CACHE_TYPES
from llamarig.forks.options import FORKS as _FORKS
from llamarig.forks.options import SPLIT_MODES as _FORK_SPLIT_MODES

FORKS = list(_FORKS)
# Every fork's values; validate.py checks the rig's own fork (llamarig/forks/options.py).
CACHE_TYPES = sorted({t for types in _FORK_CACHE_TYPES.values() for t in types})
SPLIT_MODES = sorted({m for modes in _FORK_SPLIT_MODES.values() for m in modes})
_CACHE_CANON = {t.lower(): t for t in CACHE_TYPES}


def _cache_type(value):
    """Cache types as the parsers spell them (`Q8_0` -> `q8_0`, `q8_kv` -> `q8_KV`): both parsers compare exactly."""
    return _CACHE_CANON.get(value.lower(), value) if isinstance(value, str) else value
NAME_REGEX = r"^[a-z0-9][a-z0-9_-]{0,62}$"
REPO_REGEX = r"^[\w.-]+/[\w.-]+$"
ENV_NAME_REGEX = r"^[A-Za-z_][A-Za-z0-9_]*$"
CMAKE_OPTION_REGEX = r"^-D[A-Za-z_][A-Za-z0-9_]*(:[A-Z]+)?=.*$"
TARGET_REGEX = r"^[A-Za-z0-9_.-]+$"
ABSOLUTE_REGEX = r"^/.*"
HTTP_REGEX = r"^https?://.+"
USER_REGEX = r"^[a-z_][a-z0-9_-]{0,31}$"  # useradd refuses names longer than 32
WORKER_REGEX = r"^[^\s/]+(/[a-z0-9][a-z0-9_-]{0,62})?$"  # HOST or HOST/RPC-SERVER-NAME
INT_MAX = 2**31 - 1  # llama-server parses its integer flags with std::stoi


def _nullable(rule: dict) -> dict:
    return {**rule, "nullable": True}


def _doc(doc: str, example=None) -> dict:
    # The example is kept as Python source: cerberus hashes schemas and cannot hash nested lists.
    return {"doc": doc, "example": repr(example)}


GPU_SCHEMA = {
    "model": {"type": "string", "required": True, "empty": False,
              "meta": _doc("GPU model as `nvidia-smi` names it (checked on the rig)", "NVIDIA GeForce RTX 3090")},
    "memory_gib": {"type": "number", "required": True, "min": 1,
                   "meta": _doc("memory of the card in GiB", 24)},
}

MODEL_SCHEMA = {
    "repo": {"type": "string", "required": True, "regex": REPO_REGEX,
             "meta": _doc("Hugging Face Hub repository, OWNER/NAME", "unsloth/GLM-4.7-GGUF")},
    "revision": {"type": "string", "default": "main", "empty": False,
                 "meta": _doc("branch, tag or 40-hex commit; a branch or tag is resolved to its commit at deploy", "main")},
    "include": {"type": "list", "default": ["*.gguf"], "minlength": 1,
                "schema": {"type": "string", "empty": False},
                "meta": _doc("glob patterns of the repository files to download", ["UD-IQ1_M/*"])},
    "file": _nullable({"type": "string", "default": None, "empty": False,
                       "meta": _doc("the GGUF passed to `--model`, relative to the repository (the first file of a split set); "
                                    "when unset it is found among the included files at deploy",
                                    "UD-IQ1_M/GLM-4.7-UD-IQ1_M-00001-of-00003.gguf")}),
}

SAMPLING_SCHEMA = {
    "temp": _nullable({"type": "number", "min": 0, "default": None, "meta": _doc("`--temp`", 0.6)}),
    "top_p": _nullable({"type": "number", "min": 0, "max": 1, "default": None, "meta": _doc("`--top-p`", 0.95)}),
    "top_k": _nullable({"type": "integer", "min": 0, "default": None, "meta": _doc("`--top-k`", 40)}),
    "min_p": _nullable({"type": "number", "min": 0, "max": 1, "default": None, "meta": _doc("`--min-p`", 0.01)}),
    "repeat_penalty": _nullable({"type": "number", "min": 0, "default": None, "meta": _doc("`--repeat-penalty`", 1.0)}),
}

SERVICE_SCHEMA = {
    "name": {"type": "string", "required": True, "regex": NAME_REGEX,
             "meta": _doc("service name; the unit is `llamarig-NAME.service`", "glm")},
    "model": {"type": "string", "required": True, "empty": False,
              "meta": _doc("a key of `models`", "glm47")},
    "host": _nullable({"type": "string", "default": None, "empty": False,
                       "meta": _doc("`--host`: address to bind; null: not passed (llama-server binds 127.0.0.1)", "0.0.0.0")}),
    "port": {"type": "integer", "required": True, "min": 1, "max": 65535,
             "meta": _doc("`--port`", 8000)},
    "ctx_size": _nullable({"type": "integer", "default": None, "min": 0,
                           "meta": _doc("`--ctx-size`; checked live through `/props` after every start", 131072)}),
    "cache_type_k": _nullable({"type": "string", "default": None, "allowed": CACHE_TYPES, "coerce": _cache_type,
                               "meta": _doc("`--cache-type-k` (any case; q6_0 and q8_KV: ik_llama.cpp only)", "q8_0")}),
    "cache_type_v": _nullable({"type": "string", "default": None, "allowed": CACHE_TYPES, "coerce": _cache_type,
                               "meta": _doc("`--cache-type-v`", "q8_0")}),
    "gpus": _nullable({"type": "list", "default": None, "schema": {"type": "integer", "min": 0},
                       "meta": _doc("indices of the rig's `gpus` this service uses (`CUDA_VISIBLE_DEVICES`); "
                                    "null: all of them; []: none", [0, 1])}),
    "shared_gpus": {"type": "boolean", "default": False,
                    "meta": _doc("allow this service's GPUs to overlap another service's", False)},
    "n_gpu_layers": _nullable({"type": "integer", "default": None, "min": -1,
                               "meta": _doc("`--n-gpu-layers`; null: not passed (the fork's default)", 999)}),
    "split_mode": _nullable({"type": "string", "default": None, "allowed": SPLIT_MODES,
                             "meta": _doc("`--split-mode`: none, layer, row, tensor (llama.cpp); none, layer, attn, graph (ik_llama.cpp)", "layer")}),
    "main_gpu": _nullable({"type": "integer", "default": None, "min": 0,
                           "meta": _doc("`--main-gpu`, an index into the service's GPUs", 0)}),
    "tensor_split": _nullable({"type": "list", "default": None, "minlength": 1,
                               "schema": {"type": "number", "min": 0},
                               "meta": _doc("`--tensor-split`, one proportion per service GPU", [1, 1, 1, 1])}),
    "tensor_overrides": {"type": "list", "default": [],
                         "schema": {"type": "list", "items": [{"type": "string", "empty": False},
                                                              {"type": "string", "empty": False}]},
                         "meta": _doc("ordered `--override-tensor` pairs [regex, device]; first match wins, "
                                      "device is CPU or CUDAi (i indexes the service's GPUs)",
                                      [["blk\\.(3|4)\\.ffn_.*_exps\\.", "CUDA0"], ["ffn_.*_exps\\.", "CPU"]])},
    "placement": _nullable({"type": "string", "default": None, "allowed": ["auto"],
                            "meta": _doc("auto: llamarig plans `--n-gpu-layers`, `--tensor-split` and the `--override-tensor` "
                                         "list from the model's headers, the rig's GPUs and `ram_gib` (see `llamarig plan`); "
                                         "null: the placement keys given here, checked against the same memory model", "auto")}),
    "n_cpu_moe": _nullable({"type": "integer", "default": None, "min": 0,
                            "meta": _doc("`--n-cpu-moe N`: experts of N layers on the CPU (which layers differs by fork: see llamarig/forks/options.py)", 72)}),
    "cpu_moe": _nullable({"type": "boolean", "default": None, "meta": _doc("true: `--cpu-moe`, every expert on the CPU", True)}),
    "n_predict": _nullable({"type": "integer", "default": None, "min": -2, "meta": _doc("`--n-predict`", -1)}),
    "reasoning": _nullable({"type": "string", "default": None, "allowed": ["on", "off", "auto"],
                            "meta": _doc("`--reasoning on|off|auto` (llama.cpp)", "off")}),
    "reasoning_budget": _nullable({"type": "integer", "default": None, "min": -1, "meta": _doc("`--reasoning-budget`", 0)}),
    "grouped_expert_routing": _nullable({"type": "boolean", "default": None,
                                         "meta": _doc("true: `--grouped-expert-routing` (-ger, ik_llama.cpp)", True)}),
    "merge_qkv": _nullable({"type": "boolean", "default": None, "meta": _doc("true: `--merge-qkv` (ik_llama.cpp)", True)}),
    "split_mode_graph_scheduling": _nullable({"type": "boolean", "default": None,
                                              "meta": _doc("true: `--split-mode-graph-scheduling` (-smgs, ik_llama.cpp)", True)}),
    "max_extra_alloc": _nullable({"type": "integer", "default": None, "min": 0,
                                  "meta": _doc("`--max-extra-alloc` MiB (-mea, ik_llama.cpp)", 256)}),
    "max_gpu": _nullable({"type": "integer", "default": None, "min": 0, "meta": _doc("`--max-gpu` (ik_llama.cpp, split mode graph)", 3)}),
    "mla_use": _nullable({"type": "integer", "default": None, "min": 0, "max": 3, "meta": _doc("`--mla-use` (-mla, ik_llama.cpp)", 3)}),
    "attention_max_batch": _nullable({"type": "integer", "default": None, "min": 0,
                                      "meta": _doc("`--attention-max-batch` (-amb, ik_llama.cpp)", 512)}),
    "run_time_repack": _nullable({"type": "boolean", "default": None, "meta": _doc("true: `--run-time-repack` (-rtr, ik_llama.cpp)", True)}),
    "fused_moe": _nullable({"type": "boolean", "default": None,
                            "meta": _doc("false: `--no-fused-moe` (ik_llama.cpp; fused MoE is its default)", False)}),
    "threads": _nullable({"type": "integer", "default": None, "min": 1, "meta": _doc("`--threads`", 12)}),
    "threads_batch": _nullable({"type": "integer", "default": None, "min": 1, "meta": _doc("`--threads-batch`", 24)}),
    "batch_size": _nullable({"type": "integer", "default": None, "min": 1, "meta": _doc("`--batch-size`", 2048)}),
    "ubatch_size": _nullable({"type": "integer", "default": None, "min": 1, "meta": _doc("`--ubatch-size`", 512)}),
    "parallel": _nullable({"type": "integer", "default": None, "min": 1, "meta": _doc("`--parallel` slots", 1)}),
    "flash_attn": _nullable({"type": "string", "default": None, "allowed": ["on", "off", "auto"],
                             "meta": _doc("`--flash-attn`", "on")}),
    "mmap": _nullable({"type": "boolean", "default": None, "meta": _doc("true: `--mmap`, false: `--no-mmap`", False)}),
    "jinja": _nullable({"type": "boolean", "default": None, "meta": _doc("true: `--jinja`, false: `--no-jinja`", True)}),
    "fit": _nullable({"type": "boolean", "default": None,
                      "meta": _doc("llama.cpp's start-up `--fit on|off`; null: not passed", False)}),
    "alias": _nullable({"type": "string", "default": None, "empty": False, "meta": _doc("`--alias`", "glm-4.7")}),
    "sampling": {"type": "dict", "default": {}, "schema": SAMPLING_SCHEMA,
                 "meta": _doc("server-side sampling defaults", {"temp": 0.6, "top_p": 0.95})},
    "extra_args": {"type": "list", "default": [], "schema": {"type": "string"},
                   "meta": _doc("arguments appended last, verbatim; none a typed key sets (`--model`, `--host`, "
                                "`--port`, `--rpc`, and what the planner plans for: `--ctx-size`, `--ubatch-size`, "
                                "`--batch-size`, `--parallel`, `--flash-attn`, `--cache-type-k`/`-v`, `--mla-use`)",
                                ["--reasoning", "off"])},
    "api_key_env": _nullable({"type": "string", "default": None, "regex": ENV_NAME_REGEX,
                              "meta": _doc("environment variable on the controller holding this server's API key; it reaches "
                                           "the server as a root-only file through `LoadCredential=` and `--api-key-file`",
                                           "LLAMA_API_KEY")}),
    "api_key_file": _nullable({"type": "string", "default": None, "empty": False,
                               "meta": _doc("file on the controller holding this server's API key (instead of `api_key_env`)",
                                            "~/.config/llamarig/glm.key")}),
    "environment": {"type": "dict", "default": {},
                    "keysrules": {"type": "string", "regex": ENV_NAME_REGEX},
                    "valuesrules": {"type": "string"},
                    "meta": _doc("extra environment of the unit", {"GGML_CUDA_GRAPH_OPT": "1"})},
    "rpc_workers": {"type": "list", "default": [], "schema": {"type": "string", "regex": WORKER_REGEX},
                    "meta": _doc("other rigs of the inventory whose `rpc_servers` this service uses through llama.cpp's "
                                 "RPC backend (`--rpc`): `HOST` (all of that rig's RPC servers) or `HOST/NAME`; their "
                                 "devices are planned with this rig's GPUs and RAM", ["garage", "office/gpu1"])},
}

RPC_SERVER_SCHEMA = {
    "name": {"type": "string", "required": True, "regex": NAME_REGEX,
             "meta": _doc("the RPC server's name; its unit is `llamarig-rpc-NAME.service`", "garage")},
    "host": {"type": "string", "required": True, "empty": False,
             "meta": _doc("the address `rpc-server` binds (`-H`): one address of a private network; `rpc-server` "
                          "has no authentication, so `0.0.0.0` or `::` needs `any_address: true`", "192.168.10.2")},
    "port": {"type": "integer", "default": 50052, "min": 1, "max": 65535, "meta": _doc("`-p`", 50052)},
    "address": _nullable({"type": "string", "default": None, "empty": False,
                          "meta": _doc("the address the main rigs connect to; null: `host` (needed when `host` is a "
                                       "wildcard)", "192.168.10.2")}),
    "any_address": {"type": "boolean", "default": False,
                    "meta": _doc("true: allow binding a wildcard address (`0.0.0.0`, `::`), reachable from every "
                                 "network the rig is on", False)},
    "gpus": _nullable({"type": "list", "default": None, "schema": {"type": "integer", "min": 0},
                       "meta": _doc("indices of the rig's `gpus` it lends (`-d CUDA0,...`); null: all of them; []: "
                                    "its CPU and `ram_gib` instead", [0, 1])}),
    "threads": _nullable({"type": "integer", "default": None, "min": 1, "max": INT_MAX,
                          "meta": _doc("`-t`, threads of a lent CPU", 8)}),
    "cache": {"type": "boolean", "default": True,
              "meta": _doc("`-c`: keep received tensors in a local cache (loads after the first are fast)", True)},
    "cache_max_gib": {"type": "number", "default": 64, "min": 1,
                      "meta": _doc("the cache is pruned to this size (least recently used first) before every start", 64)},
}

SCHEMA = {
    "gpus": {"type": "list", "required": True, "schema": {"type": "dict", "schema": GPU_SCHEMA},
             "meta": _doc("the rig's NVIDIA GPUs in `nvidia-smi` index order; checked against the rig at deploy",
                          [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}])},
    "ram_gib": _nullable({"type": "number", "required": True, "min": 1,
                          "meta": _doc("system RAM in GiB the servers may use for weights kept off the GPUs; "
                                       "null: not planned against", 256)}),
    "gpu_margin_mib": {"type": "integer", "required": True, "min": 0,
                       "meta": _doc("MiB of every GPU the planner leaves free beyond what it counts (weights, caches, "
                                    "compute buffers and the CUDA runtime; llama.cpp's own --fit-target is 1024)", 1024)},
    "build_fork": {"type": "string", "required": True, "allowed": FORKS,
                   "meta": _doc("which llama.cpp to build", "llama.cpp")},
    "build_git_url": {"type": "string", "required": True, "empty": False,
                      "meta": _doc("git URL the rig clones", "https://github.com/ggml-org/llama.cpp")},
    "build_ref": {"type": "string", "required": True, "empty": False,
                  "meta": _doc("branch, tag or 40-hex commit; resolved to a commit (git ls-remote) before any rig is touched", "b7100")},
    "build_cuda_architectures": {"type": ["string", "list"], "required": True,
                                 "meta": _doc("`auto` (from `nvidia-smi --query-gpu=compute_cap`) or a list such as [86]", "auto")},
    "build_cmake_options": {"type": "list", "required": True, "schema": {"type": "string", "regex": CMAKE_OPTION_REGEX},
                            "meta": _doc("extra CMake cache options, each `-DNAME=VALUE`", ["-DGGML_CUDA_FA_ALL_QUANTS=ON"])},
    "build_targets": {"type": "list", "required": True, "minlength": 1,
                      "schema": {"type": "string", "regex": TARGET_REGEX},
                      "meta": _doc("CMake targets built and installed; must include llama-server", ["llama-server", "llama-bench"])},
    "build_jobs": _nullable({"type": "integer", "required": True, "min": 1,
                             "meta": _doc("parallel compile jobs; null: the rig's CPU count", 8)}),
    "build_root": {"type": "string", "required": True, "regex": ABSOLUTE_REGEX,
                   "meta": _doc("where sources and builds live on the rig", "/opt/llamarig")},
    "build_ccache_dir": _nullable({"type": "string", "required": True, "regex": ABSOLUTE_REGEX,
                                   "meta": _doc("ccache directory on the rig; null: no ccache", "/var/cache/ccache")}),
    "build_packages": {"type": "list", "required": True, "schema": {"type": "string"},
                       "meta": _doc("Debian packages the build needs", ["build-essential", "cmake", "git", "ccache"])},
    "tune_forks": {"type": "list", "default": [],
                   "schema": {"type": "dict", "schema": {
                       "build_fork": {"type": "string", "required": True, "allowed": FORKS},
                       "build_git_url": {"type": "string", "required": True, "empty": False},
                       "build_ref": {"type": "string", "required": True, "empty": False},
                       "build_cmake_options": _nullable({"type": "list", "default": None,
                                                         "schema": {"type": "string", "regex": CMAKE_OPTION_REGEX}}),
                       "build_targets": _nullable({"type": "list", "default": None, "minlength": 1,
                                                   "schema": {"type": "string", "regex": TARGET_REGEX}}),
                   }},
                   "meta": _doc("other builds `llamarig tune` may build on the rig (each in its own prefix; the serving "
                                "build and its link are left alone) and try the services on; `build_cmake_options` "
                                "and `build_targets` default to the rig's",
                                [{"build_fork": "ik_llama.cpp", "build_git_url": "https://github.com/ikawrakow/ik_llama.cpp",
                                  "build_ref": "main"}])},
    "hub_endpoint": {"type": "string", "required": True, "regex": HTTP_REGEX,
                     "meta": _doc("Hugging Face Hub endpoint (HF_ENDPOINT) for the controller and the rig", "https://huggingface.co")},
    "hub_token_env": _nullable({"type": "string", "required": True, "regex": ENV_NAME_REGEX,
                                "meta": _doc("environment variable on the controller holding a Hub token, if any", "HF_TOKEN")}),
    "hub_token_file": _nullable({"type": "string", "required": True, "empty": False,
                                 "meta": _doc("file on the controller holding a Hub token (instead of `hub_token_env`)",
                                              "~/.cache/huggingface/token")}),
    "hub_client": {"type": "string", "required": True, "empty": False,
                   "meta": _doc("pip requirement of the Hub client installed on the rig", "huggingface_hub>=1.0,<3")},
    "models": {"type": "dict", "required": True,
               "keysrules": {"type": "string", "regex": NAME_REGEX},
               "valuesrules": {"type": "dict", "schema": MODEL_SCHEMA},
               "meta": _doc("models by name", {"glm47": {"repo": "unsloth/GLM-4.7-GGUF", "include": ["UD-IQ1_M/*"]}})},
    "models_dir": {"type": "string", "required": True, "regex": ABSOLUTE_REGEX,
                   "meta": _doc("where models are stored on the rig, one directory per model", "/var/lib/llamarig/models")},
    "services": {"type": "list", "required": True,
                 "schema": {"type": "dict", "schema": SERVICE_SCHEMA},
                 "meta": _doc("llama-server instances of the rig", [{"name": "glm", "model": "glm47", "port": 8000}])},
    "rpc_servers": {"type": "list", "required": True,
                    "schema": {"type": "dict", "schema": RPC_SERVER_SCHEMA},
                    "meta": _doc("llama.cpp `rpc-server`s this rig runs, lending its GPUs (or CPU) to the services of "
                                 "other rigs that name it in `rpc_workers`; the link must be a private network",
                                 [{"name": "garage", "host": "192.168.10.2", "gpus": [0, 1]}])},
    "service_user": {"type": "string", "required": True, "regex": USER_REGEX,
                     "meta": _doc("system user the servers run as", "llama")},
    "power_limit_w": _nullable({"type": "number", "required": True,
                                "meta": _doc("power limit in watts for every GPU of the rig; null: leave as is", 350)}),
    "power_limits_w": {"type": "dict", "required": True,
                       "keysrules": {"type": "integer", "min": 0},
                       "valuesrules": {"type": "number"},
                       "meta": _doc("per-GPU power limits in watts, by index; override `power_limit_w`", {3: 200})},
    "power_persistence_mode": {"type": "boolean", "required": True,
                               "meta": _doc("enable persistence mode on every GPU", True)},
    "verify_timeout_s": {"type": "integer", "required": True, "min": 1,
                         "meta": _doc("seconds to wait for `/health` after a start", 600)},
    "verify_prompt": {"type": "string", "required": True, "empty": False,
                      "meta": _doc("prompt of the check completion", "Say hello.")},
    "verify_max_tokens": {"type": "integer", "required": True, "min": 1,
                          "meta": _doc("tokens of the check completion", 16)},
}

def _cap_integers(schema: dict) -> None:
    """Every integer a flag carries fits llama-server's int."""
    for rule in schema.values():
        if rule.get("type") == "integer" and "max" not in rule:
            rule["max"] = INT_MAX


_cap_integers(SERVICE_SCHEMA)
_cap_integers(SAMPLING_SCHEMA)

# Host-data keys that belong to pyinfra or its connectors, not to llamarig.
FOREIGN_KEY_PREFIXES = ("ssh_", "_", "winrm_", "docker_", "chroot_", "local_", "terraform_", "fake_")
