"""A corpus of bad host data: each realistic mistake, and the exact problem lines `llamarig check` prints for it.

Every case is ``(label, overrides, expected)``: ``overrides`` go over ``helpers.rig()`` (group_data/all.py
defaults plus a 2x3090 rig with a model ``gemma`` and a service ``chat`` on port 8080) for host ``r1``, or are a
list of ``(host, overrides)`` validated together with ``validate_all``; ``expected`` is the exact list of
problem lines, in the order validate_host returns them. VALID cases are edge cases that must pass.
A test checks that every key of the schema has at least one case whose problem names it.
"""

from __future__ import annotations

import re

import pytest

from llamarig.hostdata.schema import GPU_SCHEMA, MODEL_SCHEMA, RPC_SERVER_SCHEMA, SAMPLING_SCHEMA, SCHEMA, SERVICE_SCHEMA
from llamarig.hostdata.validate import validate_all, validate_host

from .helpers import rig

GPU = {"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}
FILE = "gemma-00001-of-00003.gguf"
SECRET = "sk-live-7Hq2mZ9xKcWv"


def svc(**kw) -> dict:
    return {"name": "chat", "model": "gemma", "port": 8080, **kw}


def gemma(**kw) -> dict:
    """`models` with the one model gemma, changed by ``kw``."""
    return {"gemma": {"repo": "acme/gemma-GGUF", "include": ["*.gguf"], "file": FILE, **kw}}


def ik(*services) -> dict:
    return {"build_fork": "ik_llama.cpp", "services": list(services)}


# A worker rig: no service of its own, one RPC server lending its two GPUs on a private address.
W = {"services": [], "rpc_servers": [{"name": "garage", "host": "10.0.0.2"}]}

# Two services on one GPU each: a second service that does not collide by itself.
EMBED = {"name": "embed", "model": "gemma", "port": 8081, "gpus": [1]}


BAD = [
    # --- typos of keys, at every level, with the key meant ---
    ("servcies typo", {"servcies": [svc()]}, [
        "r1: servcies = (an unknown key): expected a known key (see the README's data reference) (did you mean services?)",
    ]),
    ("service singular", {"service": [svc()]}, [
        "r1: service = (an unknown key): expected a known key (see the README's data reference) (did you mean services?)",
    ]),
    ("gpu singular", {"gpu": [GPU]}, [
        "r1: gpu = (an unknown key): expected a known key (see the README's data reference) (did you mean gpus?)",
    ]),
    ("build area as a nested dict", {"build": {"ref": "b7100"}}, [
        "r1: build = (an unknown key): expected a known key (see the README's data reference; keys are flat: build_fork, build_git_url, build_ref, build_cuda_architectures, build_cmake_options, build_targets, build_jobs, build_root, build_ccache_dir, build_packages)",
    ]),
    ("build key without its prefix", {"jobs": 8}, [
        "r1: jobs = (an unknown key): expected a known key (see the README's data reference) (did you mean build_jobs?)",
    ]),
    ("power_limit without unit suffix", {"power_limit": 300}, [
        "r1: power_limit = (an unknown key): expected a known key (see the README's data reference) (did you mean power_limit_w?)",
    ]),
    ("cuda_architectures without prefix", {"cuda_architectures": [86]}, [
        "r1: cuda_architectures = (an unknown key): expected a known key (see the README's data reference) (did you mean build_cuda_architectures?)",
    ]),
    ("ctx_szie typo", {"services": [svc(ctx_szie=8192)]}, [
        "r1: services[0].ctx_szie = (an unknown key): expected a known key (see the README's data reference) (did you mean ctx_size?)",
    ]),
    ("shared_gpu singular", {"services": [svc(shared_gpu=True)]}, [
        "r1: services[0].shared_gpu = (an unknown key): expected a known key (see the README's data reference) (did you mean shared_gpus?)",
    ]),
    ("gpu_layers without n_", {"services": [svc(gpu_layers=99)]}, [
        "r1: services[0].gpu_layers = (an unknown key): expected a known key (see the README's data reference) (did you mean n_gpu_layers?)",
    ]),
    ("enviroment typo", {"services": [svc(enviroment={"GGML_CUDA_GRAPH_OPT": "1"})]}, [
        "r1: services[0].enviroment = (an unknown key): expected a known key (see the README's data reference) (did you mean environment?)",
    ]),
    ("extra_arg singular", {"services": [svc(extra_arg=["--jinja"])]}, [
        "r1: services[0].extra_arg = (an unknown key): expected a known key (see the README's data reference) (did you mean extra_args?)",
    ]),
    ("api_key without _env", {"services": [svc(api_key="CHAT_KEY")]}, [
        "r1: services[0].api_key = (an unknown key): expected a known key (see the README's data reference) (did you mean api_key_env?)",
    ]),
    ("temprature typo", {"services": [svc(sampling={"temprature": 0.6})]}, [
        "r1: services[0].sampling.temprature = (an unknown key): expected a known key (see the README's data reference) (did you mean temp?)",
    ]),
    ("temperature spelled out", {"services": [svc(sampling={"temperature": 0.6})]}, [
        "r1: services[0].sampling.temperature = (an unknown key): expected a known key (see the README's data reference) (did you mean temp?)",
    ]),
    ("top-p with a dash", {"services": [svc(sampling={"top-p": 0.95})]}, [
        "r1: services[0].sampling.top-p = (an unknown key): expected a known key (see the README's data reference) (did you mean top_p?)",
    ]),
    ("memroy_gib typo", {"gpus": [{"model": "NVIDIA GeForce RTX 3090", "memroy_gib": 24}, GPU]}, [
        'r1: gpus[0].memory_gib = (missing): expected this key to be set',
        "r1: gpus[0].memroy_gib = (an unknown key): expected a known key (see the README's data reference) (did you mean memory_gib?)",
    ]),
    ("modle typo in a gpu", {"gpus": [GPU, {"modle": "NVIDIA GeForce RTX 3090", "memory_gib": 24}]}, [
        'r1: gpus[1].model = (missing): expected this key to be set',
        "r1: gpus[1].modle = (an unknown key): expected a known key (see the README's data reference) (did you mean model?)",
    ]),
    ("repo_id typo", {"models": {"gemma": {"repo_id": "acme/gemma-GGUF"}}}, [
        'r1: models.gemma.repo = (missing): expected this key to be set',
        "r1: models.gemma.repo_id = (an unknown key): expected a known key (see the README's data reference) (did you mean repo?)",
    ]),
    ("revison typo", {"models": gemma(revison="v1")}, [
        "r1: models.gemma.revison = (an unknown key): expected a known key (see the README's data reference) (did you mean revision?)",
    ]),
    ("includes plural", {"models": {"gemma": {"repo": "acme/gemma-GGUF", "includes": ["*.gguf"]}}}, [
        "r1: models.gemma.includes = (an unknown key): expected a known key (see the README's data reference) (did you mean include?)",
    ]),

    # --- wrong case and near misses of allowed values ---
    ("split_mode Layer", {"services": [svc(split_mode="Layer")]}, [
        "r1: services[0].split_mode = 'Layer': expected one of none, layer, row, tensor (did you mean layer?)",
    ]),
    ("split_mode rows", {"services": [svc(split_mode="rows")]}, [
        "r1: services[0].split_mode = 'rows': expected one of none, layer, row, tensor (did you mean row?)",
    ]),
    ("split_mode of ik on llama.cpp", {"services": [svc(split_mode="graph")]}, ["r1: services[0].split_mode = 'graph': expected one of none, layer, row, tensor (llama.cpp)"]),
    ("flash_attn ON", {"services": [svc(flash_attn="ON")]}, ["r1: services[0].flash_attn = 'ON': expected one of on, off, auto (did you mean on?)"]),
    ("flash_attn enabled", {"services": [svc(flash_attn="enabled")]}, ["r1: services[0].flash_attn = 'enabled': expected one of on, off, auto"]),
    ("reasoning Off", {"services": [svc(reasoning="Off")]}, ["r1: services[0].reasoning = 'Off': expected one of on, off, auto (did you mean off?)"]),
    ("placement Auto", {"services": [svc(placement="Auto")]}, ["r1: services[0].placement = 'Auto': expected auto or null (did you mean auto?)"]),
    ("placement manual", {"services": [svc(placement="manual")]}, ["r1: services[0].placement = 'manual': expected auto or null"]),
    ("cache_type_k q8", {"services": [svc(cache_type_k="q8")]}, [
        "r1: services[0].cache_type_k = 'q8': expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (did you mean q8_0?)",
    ]),
    ("cache_type_v fp16", {"services": [svc(cache_type_v="fp16")]}, [
        "r1: services[0].cache_type_v = 'fp16': expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (did you mean f16?)",
    ]),
    ("cache type of ik on llama.cpp", {"services": [svc(cache_type_v="q8_KV")]}, [
        "r1: services[0].cache_type_v = 'q8_KV': expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (llama.cpp)",
    ]),
    ("build_fork capitalised", {"build_fork": "Llama.cpp"}, ["r1: build_fork = 'Llama.cpp': expected one of llama.cpp, ik_llama.cpp (did you mean llama.cpp?)"]),
    ("build_fork with a dash", {"build_fork": "ik-llama.cpp"}, [
        "r1: build_fork = 'ik-llama.cpp': expected one of llama.cpp, ik_llama.cpp (did you mean ik_llama.cpp?)",
    ]),
    ("build_fork vllm", {"build_fork": "vllm"}, ["r1: build_fork = 'vllm': expected one of llama.cpp, ik_llama.cpp"]),
    ("override device lower case", {"services": [svc(tensor_overrides=[["ffn_.*_exps", "cuda0"]])]}, [
        "r1: services[0].tensor_overrides[0][1] = 'cuda0': expected a device of this service: CPU, CUDA0, CUDA1 (did you mean CUDA0?)",
    ]),
    ("service name capitalised", {"services": [svc(name="Chat")]}, [
        "r1: services[0].name = 'Chat': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters (did you mean chat?)",
    ]),
    ("service name with a space", {"services": [svc(name="my chat")]}, [
        "r1: services[0].name = 'my chat': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters (did you mean my-chat?)",
    ]),
    ("service_user capitalised", {"service_user": "Llama"}, [
        "r1: service_user = 'Llama': expected a user name of lower-case letters, digits, '-' and '_', at most 32 characters, such as llama (did you mean llama?)",
    ]),
    ("build_cuda_architectures Auto", {"build_cuda_architectures": "Auto"}, [
        "r1: build_cuda_architectures = 'Auto': expected `auto` or a list of architectures such as [86, 89] (did you mean auto?)",
    ]),

    # --- strings for numbers, booleans for numbers, numbers for strings ---
    ("port as a string", {"services": [svc(port="8080")]}, ["r1: services[0].port = '8080': expected a whole number without quotes"]),
    ("memory_gib 24GB", {"gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": "24GB"}, GPU]}, ["r1: gpus[0].memory_gib = '24GB': expected a number without quotes or a unit"]),
    ("power_limit_w 350W", {"power_limit_w": "350W"}, ["r1: power_limit_w = '350W': expected a number without quotes or a unit"]),
    ("power_limits_w value max", {"power_limits_w": {0: "max"}}, ["r1: power_limits_w[0] = 'max': expected a number without quotes"]),
    ("ram_gib 256GB", {"ram_gib": "256GB"}, ["r1: ram_gib = '256GB': expected a number without quotes or a unit"]),
    ("ctx_size 32k", {"services": [svc(ctx_size="32k")]}, ["r1: services[0].ctx_size = '32k': expected a whole number without quotes or a unit"]),
    ("verify_timeout_s 10m", {"verify_timeout_s": "10m"}, ["r1: verify_timeout_s = '10m': expected a whole number without quotes or a unit"]),
    ("verify_max_tokens as a string", {"verify_max_tokens": "16"}, ["r1: verify_max_tokens = '16': expected a whole number without quotes"]),
    ("build_jobs as a string", {"build_jobs": "8"}, ["r1: build_jobs = '8': expected a whole number without quotes"]),
    ("threads as a string", {"services": [svc(threads="12")]}, ["r1: services[0].threads = '12': expected a whole number without quotes"]),
    ("batch_size as a string", {"services": [svc(batch_size="2048")]}, ["r1: services[0].batch_size = '2048': expected a whole number without quotes"]),
    ("parallel as a string", {"services": [svc(parallel="4")]}, ["r1: services[0].parallel = '4': expected a whole number without quotes"]),
    ("n_cpu_moe as a string", {"services": [svc(n_cpu_moe="72")]}, ["r1: services[0].n_cpu_moe = '72': expected a whole number without quotes"]),
    ("reasoning_budget as a string", {"services": [svc(reasoning_budget="0")]}, ["r1: services[0].reasoning_budget = '0': expected a whole number without quotes"]),
    ("n_gpu_layers all", {"services": [svc(n_gpu_layers="all")]}, ["r1: services[0].n_gpu_layers = 'all': expected a whole number without quotes"]),
    ("temp as a string", {"services": [svc(sampling={"temp": "0.6"})]}, ["r1: services[0].sampling.temp = '0.6': expected a number without quotes"]),
    ("top_p as a string", {"services": [svc(sampling={"top_p": "0.95"})]}, ["r1: services[0].sampling.top_p = '0.95': expected a number without quotes"]),
    ("ctx_size True", {"services": [svc(ctx_size=True)]}, ['r1: services[0].ctx_size = True: expected a whole number, not true or false']),
    ("port True", {"services": [svc(port=True)]}, ['r1: services[0].port = True: expected a whole number, not true or false']),
    ("power_limit_w True", {"power_limit_w": True}, ['r1: power_limit_w = True: expected a number, not true or false']),
    ("repeat_penalty True", {"services": [svc(sampling={"repeat_penalty": True})]}, ['r1: services[0].sampling.repeat_penalty = True: expected a number, not true or false']),
    ("min_p True", {"services": [svc(sampling={"min_p": True})]}, ['r1: services[0].sampling.min_p = True: expected a number, not true or false']),
    ("top_k fractional", {"services": [svc(sampling={"top_k": 40.5})]}, ['r1: services[0].sampling.top_k = 40.5: expected a whole number']),
    ("gpu_margin_mib fractional", {"gpu_margin_mib": 1.5}, ['r1: gpu_margin_mib = 1.5: expected a whole number']),
    ("alias a number", {"services": [svc(alias=3)]}, ["r1: services[0].alias = 3: expected a string (in quotes: '3')"]),
    ("gpu model a number", {"gpus": [{"model": 3090, "memory_gib": 24}, GPU]}, ["r1: gpus[0].model = 3090: expected a string (in quotes: '3090')"]),
    ("verify_prompt a number", {"verify_prompt": 42}, ["r1: verify_prompt = 42: expected a string (in quotes: '42')"]),
    ("environment value a number", {"services": [svc(environment={"GGML_CUDA_GRAPH_OPT": 1})]}, ["r1: services[0].environment.GGML_CUDA_GRAPH_OPT = 1: expected a string (in quotes: '1')"]),
    ("extra_args value a number", {"services": [svc(extra_args=["--seed", 42])]}, ["r1: services[0].extra_args[1] = 42: expected a string (in quotes: '42')"]),
    ("host a number", {"services": [svc(host=0)]}, ["r1: services[0].host = 0: expected a string (in quotes: '0')"]),
    ("cache_type_k a number", {"services": [svc(cache_type_k=8)]}, [
        'r1: services[0].cache_type_k = 8: expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 or null',
    ]),

    # --- YAML habits: yes/on for booleans, None-like strings, booleans for strings ---
    ("mmap yes", {"services": [svc(mmap="yes")]}, [
        "r1: services[0].mmap = 'yes': expected true or false (Python: True or False): write True, not 'yes'",
    ]),
    ("power_persistence_mode on", {"power_persistence_mode": "on"}, [
        "r1: power_persistence_mode = 'on': expected true or false (Python: True or False): write True, not 'on'",
    ]),
    ("power_persistence_mode 1", {"power_persistence_mode": 1}, [
        'r1: power_persistence_mode = 1: expected true or false (Python: True or False): write True, not 1',
    ]),
    ("jinja no", {"services": [svc(jinja="no")]}, [
        "r1: services[0].jinja = 'no': expected true or false (Python: True or False): write False, not 'no'",
    ]),
    ("shared_gpus true as a string", {"services": [svc(shared_gpus="true")]}, [
        "r1: services[0].shared_gpus = 'true': expected true or false (Python: True or False): write True, not 'true'",
    ]),
    ("cpu_moe 1", {"services": [svc(cpu_moe=1)]}, ['r1: services[0].cpu_moe = 1: expected true or false (Python: True or False): write True, not 1']),
    ("fit on", {"services": [svc(fit="on")]}, [
        "r1: services[0].fit = 'on': expected true or false (Python: True or False): write True, not 'on'",
    ]),
    ("flash_attn True", {"services": [svc(flash_attn=True)]}, [
        "r1: services[0].flash_attn = True: expected one of on, off, auto or null (a string: write 'on', not True)",
    ]),
    ("reasoning False", {"services": [svc(reasoning=False)]}, [
        "r1: services[0].reasoning = False: expected one of on, off, auto or null (a string: write 'off', not False)",
    ]),
    ("build_ccache_dir None as a string", {"build_ccache_dir": "None"}, [
        "r1: build_ccache_dir = 'None': expected an absolute path such as /opt/llamarig, or null (Python None, not the string 'None')",
    ]),
    ("build_jobs null as a string", {"build_jobs": "null"}, [
        "r1: build_jobs = 'null': expected a whole number without quotes, or null (Python None, not the string 'null')",
    ]),
    ("hub_token_file None as a string", {"hub_token_file": "None"}, ["r1: hub_token_file = 'None': expected null (Python None, not the string 'None')"]),
    ("host None as a string", {"services": [svc(host="None")]}, ["r1: services[0].host = 'None': expected null (Python None, not the string 'None')"]),
    ("api_key_file null as a string", {"services": [svc(api_key_file="null")]}, ["r1: services[0].api_key_file = 'null': expected null (Python None, not the string 'null')"]),
    ("models None", {"models": None}, ['r1: models = None: expected a value (null is not allowed here)']),

    # --- lists where a dict is expected and the reverse ---
    ("gpus one bare dict", {"gpus": GPU}, [
        "r1: gpus = {'model': 'NVIDIA GeForce RTX 3090', 'memory_gib': 24}: expected a list: write [{...}] even for one entry (in Python, ({...}) without a trailing comma is not a tuple)",
    ]),
    ("services one bare dict (a tuple of one without its comma)", {"services": (svc())}, [
        "r1: services = {'name': 'chat', 'model': 'gemma', 'port': 8080}: expected a list: write [{...}] even for one entry (in Python, ({...}) without a trailing comma is not a tuple)",
    ]),
    ("services as a dict by name", {"services": {"chat": {"model": "gemma", "port": 8080}}}, [
        "r1: services = {'chat': {'model': 'gemma', 'port': 8080}}: expected a list of mappings [{...}, {...}], not a mapping of them",
    ]),
    ("services None", {"services": None}, ['r1: services = None: expected a value (null is not allowed here)']),
    ("a service as a list", {"services": [["chat", "gemma", 8080]]}, ["r1: services[0] = ['chat', 'gemma', 8080]: expected a mapping (a dict)"]),
    ("models as a list", {"models": [{"repo": "acme/gemma-GGUF"}]}, [
        "r1: models = [{'repo': 'acme/gemma-GGUF'}]: expected a mapping (a dict) by name, such as {'NAME': {...}}",
    ]),
    ("a model as its repo string", {"models": {"gemma": "acme/gemma-GGUF"}}, [
        "r1: models.gemma = 'acme/gemma-GGUF': expected a mapping (a dict) such as {'repo': 'acme/gemma-GGUF'}",
    ]),
    ("power_limits_w as a list", {"power_limits_w": [300, 250]}, [
        'r1: power_limits_w = [300, 250]: expected a mapping (a dict) by GPU index, such as {0: 300, 1: 250}',
    ]),
    ("power_limits_w key as a string", {"power_limits_w": {"0": 300}}, ["r1: power_limits_w = key '0': expected a whole number without quotes"]),
    ("sampling as a list", {"services": [svc(sampling=[0.6, 0.95])]}, ['r1: services[0].sampling = [0.6, 0.95]: expected a mapping (a dict)']),
    ("environment as a list", {"services": [svc(environment=["GGML_CUDA_GRAPH_OPT=1"])]}, [
        "r1: services[0].environment = ['GGML_CUDA_GRAPH_OPT=1']: expected a mapping (a dict), such as {'GGML_CUDA_GRAPH_OPT': '1'}",
    ]),
    ("environment name not a string", {"services": [svc(environment={1: "x"})]}, ["r1: services[0].environment = key 1: expected a string (in quotes: '1')"]),
    ("include a string", {"models": gemma(include="*.gguf")}, ["r1: models.gemma.include = '*.gguf': expected a list, such as ['*.gguf']"]),
    ("extra_args one string", {"services": [svc(extra_args="--jinja --no-mmap")]}, [
        "r1: services[0].extra_args = '--jinja --no-mmap': expected a list, such as ['--jinja', '--no-mmap']",
    ]),
    ("build_cmake_options one string", {"build_cmake_options": "-DGGML_CUDA_FA_ALL_QUANTS=ON"}, [
        "r1: build_cmake_options = '-DGGML_CUDA_FA_ALL_QUANTS=ON': expected a list, such as ['-DGGML_CUDA_FA_ALL_QUANTS=ON']",
    ]),
    ("build_targets one string", {"build_targets": "llama-server"}, ["r1: build_targets = 'llama-server': expected a list, such as ['llama-server']"]),
    ("build_packages one string", {"build_packages": "cmake git"}, ["r1: build_packages = 'cmake git': expected a list, such as ['cmake', 'git']"]),
    ("service gpus an int", {"services": [svc(gpus=0)]}, ['r1: services[0].gpus = 0: expected a list, such as [0]']),
    ("service gpus a string", {"services": [svc(gpus="0,1")]}, ["r1: services[0].gpus = '0,1': expected a list, such as [0, 1]"]),
    ("tensor_split as written on the command line", {"services": [svc(tensor_split="3,1")]}, ["r1: services[0].tensor_split = '3,1': expected a list, such as [3, 1]"]),
    ("tensor_overrides as a dict", {"services": [svc(tensor_overrides={"ffn_.*_exps": "CPU"})]}, ["r1: services[0].tensor_overrides = {'ffn_.*_exps': 'CPU'}: expected a list"]),
    ("tensor override as the -ot string", {"services": [svc(tensor_overrides=["ffn_.*_exps=CPU"])]}, [
        "r1: services[0].tensor_overrides[0] = 'ffn_.*_exps=CPU': expected a pair [pattern, device] such as ['ffn_.*_exps', 'CPU']",
    ]),
    ("tensor override of three items", {"services": [svc(tensor_overrides=[["ffn_.*_exps", "CPU", "CUDA0"]])]}, [
        "r1: services[0].tensor_overrides[0] = ['ffn_.*_exps', 'CPU', 'CUDA0']: expected a pair of 2 items",
    ]),
    ("build_cuda_architectures one int", {"build_cuda_architectures": 86}, [
        'r1: build_cuda_architectures = 86: expected `auto` or a list of architectures such as [86, 89] (a list even for one: [86])',
    ]),
    ("build_cuda_architectures a CMake string", {"build_cuda_architectures": "86;89"}, [
        "r1: build_cuda_architectures = '86;89': expected `auto` or a list of architectures such as [86, 89] (a list even for one: [86, 89])",
    ]),

    # --- copy-paste slips ---
    ("two services on one port", {"services": [svc(gpus=[0]), {**EMBED, "port": 8080}]}, [
        'r1: services[1].port = 8080: expected a port no other service of this rig uses (services[0] has it)',
    ]),
    ("the same service name twice", {"services": [svc(gpus=[0]), {**EMBED, "name": "chat"}]}, [
        "r1: services[1].name = 'chat': expected a name no other service of this rig has (services[0] has it)",
    ]),
    ("a GPU index the rig lacks", {"services": [svc(gpus=[0, 2])]}, ['r1: services[0].gpus[1] = 2: expected a GPU index below 2 (the rig declares 2 GPU(s))']),
    ("a GPU twice", {"services": [svc(gpus=[1, 1])]}, ['r1: services[0].gpus = [1, 1]: expected each GPU at most once']),
    ("overlapping GPUs without shared_gpus", {"services": [svc(gpus=[0, 1]), EMBED]}, [
        'r1: services[1].gpus = [1]: expected GPUs not used by another service, or shared_gpus: true on both (GPU 1 is also in services[0])',
    ]),
    ("overlapping GPUs, shared_gpus on one only", {"services": [svc(shared_gpus=True), {**EMBED, "gpus": [0]}]}, [
        'r1: services[1].gpus = [0]: expected GPUs not used by another service, or shared_gpus: true on both (GPU 0 is also in services[0])',
    ]),
    ("tensor_split of the wrong length", {"services": [svc(tensor_split=[1, 1, 1])]}, ['r1: services[0].tensor_split = [1, 1, 1]: expected 2 proportion(s), one per service GPU']),
    ("tensor_split all zero", {"services": [svc(tensor_split=[0, 0])]}, ['r1: services[0].tensor_split = [0, 0]: expected at least one non-zero proportion']),
    ("tensor_split negative", {"services": [svc(tensor_split=[1, -1])]}, ['r1: services[0].tensor_split[1] = -1: expected a value of at least 0']),
    ("override naming CUDA2 on a 2-GPU service", {"services": [svc(tensor_overrides=[["blk\\.3\\.", "CUDA2"]])]}, [
        "r1: services[0].tensor_overrides[0][1] = 'CUDA2': expected a device of this service: CPU, CUDA0, CUDA1",
    ]),
    ("override naming CUDA1 on a 1-GPU service", {"services": [svc(gpus=[1], tensor_overrides=[["exps", "CUDA1"]])]}, ["r1: services[0].tensor_overrides[0][1] = 'CUDA1': expected a device of this service: CPU, CUDA0"]),
    ("override pattern that does not compile", {"services": [svc(tensor_overrides=[["blk\\.(3|4", "CPU"]])]}, [
        "r1: services[0].tensor_overrides[0][0] = 'blk\\\\.(3|4': expected a regular expression that compiles (missing ), unterminated subpattern at position 5)",
    ]),
    ("override pattern with =", {"services": [svc(tensor_overrides=[["exps=CPU", "CPU"]])]}, [
        "r1: services[0].tensor_overrides[0][0] = 'exps=CPU': expected a pattern without '=' or ',' (llama-server splits on them)",
    ]),
    ("main_gpu beyond the service's GPUs", {"services": [svc(gpus=[1], main_gpu=1)]}, ["r1: services[0].main_gpu = 1: expected an index below 1 into the service's GPUs"]),
    ("an undeclared model", {"services": [svc(model="gemma3")]}, ["r1: services[0].model = 'gemma3': expected a model declared under `models` (declared: gemma)"]),
    ("service without its model", {"services": [{"name": "chat", "port": 8080}]}, ['r1: services[0].model = (missing): expected this key to be set']),
    ("model key capitalised, service follows it", {"models": {"Gemma": gemma()["gemma"]}, "services": [svc(model="Gemma")]}, [
        "r1: models = key 'Gemma': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters (did you mean gemma?)",
    ]),
    ("api_key_env together with api_key_file", {"services": [svc(api_key_env="CHAT_KEY", api_key_file="~/.config/llamarig/chat.key")]}, [
        "r1: services[0].api_key_file = '~/.config/llamarig/chat.key': expected null when api_key_env is set (one source per key)",
    ]),
    ("power limit for a GPU the rig lacks", {"power_limits_w": {2: 300}}, ['r1: power_limits_w[2] = 300: expected a GPU index below 2 (the rig declares 2 GPU(s))']),
    ("power limit on a rig without GPUs", {"gpus": [], "services": [svc(gpus=[])], "power_limit_w": 300}, ['r1: power_limit_w = 300: expected null on a rig without GPUs']),
    ("model file outside include", {"models": gemma(include=["Q4_K_M/*"], file="Q8_0/gemma-Q8_0.gguf")}, ["r1: models.gemma.file = 'Q8_0/gemma-Q8_0.gguf': expected a file matched by include ['Q4_K_M/*']"]),
    ("model file not a gguf", {"models": gemma(include=["*"], file="gemma.safetensors")}, ["r1: models.gemma.file = 'gemma.safetensors': expected a .gguf file"]),
    ("service named like llamarig's power unit", {"services": [svc(name="power")]}, [
        "r1: services[0].name = 'power': expected a name other than power (llamarig's own units use them)",
    ]),
    ("ik-only key on llama.cpp", {"services": [svc(merge_qkv=True)]}, [
        'r1: services[0].merge_qkv = True: expected unset: merge_qkv is an ik_llama.cpp setting and this rig builds llama.cpp',
    ]),
    ("ik-only -ger on llama.cpp", {"services": [svc(grouped_expert_routing=True)]}, [
        'r1: services[0].grouped_expert_routing = True: expected unset: grouped_expert_routing is an ik_llama.cpp setting and this rig builds llama.cpp',
    ]),
    ("ik-only -smgs on llama.cpp", {"services": [svc(split_mode_graph_scheduling=True)]}, [
        'r1: services[0].split_mode_graph_scheduling = True: expected unset: split_mode_graph_scheduling is an ik_llama.cpp setting and this rig builds llama.cpp',
    ]),
    ("ik-only --max-gpu on llama.cpp", {"services": [svc(max_gpu=2)]}, [
        'r1: services[0].max_gpu = 2: expected unset: max_gpu is an ik_llama.cpp setting and this rig builds llama.cpp',
    ]),
    ("ik-only -amb on llama.cpp", {"services": [svc(attention_max_batch=512)]}, [
        'r1: services[0].attention_max_batch = 512: expected unset: attention_max_batch is an ik_llama.cpp setting and this rig builds llama.cpp',
    ]),
    ("ik-only -no-fmoe on llama.cpp", {"services": [svc(fused_moe=False)]}, [
        'r1: services[0].fused_moe = False: expected unset: fused_moe is an ik_llama.cpp setting and this rig builds llama.cpp',
    ]),
    ("llama.cpp-only reasoning on ik", ik(svc(reasoning="off")), [
        "r1: services[0].reasoning = 'off': expected unset: reasoning is an llama.cpp setting and this rig builds ik_llama.cpp",
    ]),
    ("mmap true on ik", ik(svc(mmap=True)), [
        'r1: services[0].mmap = True: expected ik_llama.cpp has no --mmap (mmap is its default): leave mmap unset',
    ]),
    ("fit with overrides on ik", ik(svc(fit=True, tensor_overrides=[["exps", "CPU"]])), [
        'r1: services[0].fit = True: expected fit unset: ik_llama.cpp refuses --fit together with tensor overrides or --n-cpu-moe',
    ]),
    ("placement auto with n_gpu_layers", {"services": [svc(placement="auto", ctx_size=32768, n_gpu_layers=99)]}, [
        'r1: services[0].n_gpu_layers = 99: expected null with placement: auto (the planner sets the placement)',
    ]),
    ("placement auto without ctx_size", {"services": [svc(placement="auto")]}, [
        'r1: services[0].ctx_size = None: expected a context size with placement: auto (the KV cache is planned for it)',
    ]),
    ("placement auto with -ot in extra_args", {"services": [svc(placement="auto", ctx_size=32768, extra_args=["-ot", "exps=CPU"])]}, [
        "r1: services[0].extra_args = '-ot': expected no placement flag with placement: auto (the planner sets them)",
    ]),

    # --- dangerous values ---
    ("newline in alias", {"services": [svc(alias="gemma\nExecStartPre=/bin/sh -c id")]}, [
        "r1: services[0].alias = 'gemma\\nExecStartPre=/bin/sh -c id': expected a string without control characters (it holds '\\n' at position 5: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("newline in service name", {"services": [svc(name="chat\n")]}, [
        "r1: services[0].name = 'chat\\n': expected a string without control characters (it holds '\\n' at position 4: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("carriage return in an extra_args item", {"services": [svc(extra_args=["--jinja\r"])]}, [
        "r1: services[0].extra_args[0] = '--jinja\\r': expected a string without control characters (it holds '\\r' at position 7: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("newline in an environment value", {"services": [svc(environment={"GGML_CUDA_GRAPH_OPT": "1\nLD_PRELOAD=/tmp/x.so"})]}, [
        "r1: services[0].environment.GGML_CUDA_GRAPH_OPT = '1\\nLD_PRELOAD=/tmp/x.so': expected a string without control characters (it holds '\\n' at position 1: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("newline in an environment name", {"services": [svc(environment={"A\nB": "1"})]}, [
        "r1: services[0].environment = key 'A\\nB': expected a string without control characters (it holds '\\n' at position 1: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("NUL in the model file", {"models": gemma(file="gemma\x00.gguf")}, [
        "r1: models.gemma.file = 'gemma\\x00.gguf': expected a string without control characters (it holds '\\x00' at position 5: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("escape in build_ref", {"build_ref": "b7100\x1b[2J"}, [
        "r1: build_ref = 'b7100\\x1b[2J': expected a string without control characters (it holds '\\x1b' at position 5: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("line separator in verify_prompt", {"verify_prompt": "Say hello.\u2028Then stop."}, [
        "r1: verify_prompt = 'Say hello.\\u2028Then stop.': expected a string without control characters (it holds '\\u2028' at position 10: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("tab in a models key", {"models": {"gem\tma": gemma()["gemma"]}, "services": []}, [
        "r1: models = key 'gem\\tma': expected a string without control characters (it holds '\\t' at position 3: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("newline in a key of a service", {"services": [svc(**{"alias\n": "x"})]}, [
        "r1: services[0] = key 'alias\\n': expected a string without control characters (it holds '\\n' at position 5: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("newline in a top-level key", {"build_ref\n": "b7100"}, [
        "r1: (top level) = key 'build_ref\\n': expected a string without control characters (it holds '\\n' at position 9: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("--api-key in extra_args", {"services": [svc(extra_args=["--jinja", "--api-key", SECRET])]}, [
        "r1: services[0].extra_args = ['--jinja', '--api-key', ***]: expected no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)",
    ]),
    ("--api-key=KEY in extra_args", {"services": [svc(extra_args=[f"--api-key={SECRET}"])]}, [
        'r1: services[0].extra_args = [--api-key=***]: expected no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)',
    ]),
    ("--api-key KEY as one item", {"services": [svc(extra_args=[f"--api-key {SECRET}"])]}, [
        'r1: services[0].extra_args = [--api-key ***]: expected no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)',
    ]),
    ("--api-key with a newline in the key", {"services": [svc(extra_args=["--api-key", SECRET + "\n"])]}, [
        "r1: services[0].extra_args[1] = ***: expected a string without control characters (it holds '\\n' at position 20: such a character would break the unit file or the command line the value is written into)",
        "r1: services[0].extra_args = ['--api-key', ***]: expected no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)",
    ]),
    ("--hf-token in extra_args", {"services": [svc(extra_args=["--hf-token", SECRET, "--jinja"])]}, [
        "r1: services[0].extra_args = ['--hf-token', ***, '--jinja']: expected no --hf-token (a token on the command line is readable by every local user, and llamarig downloads the model itself: use hub_token_env or hub_token_file)",
    ]),
    ("-hft=TOKEN in extra_args", {"services": [svc(extra_args=[f"-hft={SECRET}"])]}, [
        "r1: services[0].extra_args = [-hft=***]: expected no --hf-token (a token on the command line is readable by every local user, and llamarig downloads the model itself: use hub_token_env or hub_token_file)",
    ]),
    ("--api-key-file in extra_args", {"services": [svc(extra_args=["--api-key-file", "/etc/llama.key"])]}, [
        "r1: services[0].extra_args = ['--api-key-file', '/etc/llama.key']: expected no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)",
    ]),
    ("secret-named environment value with a newline", {"services": [svc(environment={"OPENAI_API_KEY": SECRET + "\n"})]}, [
        "r1: services[0].environment.OPENAI_API_KEY = ***: expected a string without control characters (it holds '\\n' at position 20: such a character would break the unit file or the command line the value is written into)",
    ]),
    ("CUDA_VISIBLE_DEVICES in environment", {"services": [svc(environment={"CUDA_VISIBLE_DEVICES": "0"})]}, [
        "r1: services[0].environment = key 'CUDA_VISIBLE_DEVICES': expected a variable llamarig does not manage: for CUDA_VISIBLE_DEVICES use the service's `gpus` (llamarig sets it from them, in PCI bus order)",
    ]),
    ("CUDA_DEVICE_ORDER in environment", {"services": [svc(environment={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})]}, [
        "r1: services[0].environment = key 'CUDA_DEVICE_ORDER': expected a variable llamarig does not manage: for CUDA_DEVICE_ORDER use nothing: llamarig sets PCI_BUS_ID so CUDA's numbers match nvidia-smi's",
    ]),
    ("CUDA_CACHE_PATH in environment", {"services": [svc(environment={"CUDA_CACHE_PATH": "/tmp/cuda"})]}, [
        "r1: services[0].environment = key 'CUDA_CACHE_PATH': expected a variable llamarig does not manage: for CUDA_CACHE_PATH use nothing: llamarig points it at the unit's own cache directory",
    ]),
    ("HOME in environment", {"services": [svc(environment={"HOME": "/root"})]}, [
        "r1: services[0].environment = key 'HOME': expected a variable llamarig does not manage: for HOME use nothing: llamarig sets it to the service's state directory",
    ]),
    ("LLAMA_API_KEY in environment", {"services": [svc(environment={"LLAMA_API_KEY": SECRET})]}, [
        "r1: services[0].environment = key 'LLAMA_API_KEY': expected a variable llamarig does not manage: for LLAMA_API_KEY use api_key_env or api_key_file (a key in the unit is readable by every local user)",
    ]),
    ("HF_TOKEN in environment", {"services": [svc(environment={"HF_TOKEN": "hf_abcdef"})]}, [
        "r1: services[0].environment = key 'HF_TOKEN': expected a variable llamarig does not manage: for HF_TOKEN use hub_token_env or hub_token_file (a token in the unit is readable by every local user)",
    ]),
    ("LLAMA_ARG_ in environment", {"services": [svc(environment={"LLAMA_ARG_CTX_SIZE": "8192"})]}, [
        "r1: services[0].environment = key 'LLAMA_ARG_CTX_SIZE': expected a variable llama-server does not read as a flag: LLAMA_ARG_CTX_SIZE would set a flag behind llamarig's back; use the service's own key for it, or extra_args",
    ]),
    ("environment name with a dash", {"services": [svc(environment={"MY-VAR": "1"})]}, [
        "r1: services[0].environment = key 'MY-VAR': expected an environment variable name: letters, digits and '_', not starting with a digit",
    ]),
    ("../ in the model file", {"models": gemma(include=["*"], file="../../etc/x.gguf")}, [
        "r1: models.gemma.file = '../../etc/x.gguf': expected a path inside the repository such as UD-IQ1_M/model-00001-of-00003.gguf (relative, no '..')",
    ]),
    ("absolute model file", {"models": gemma(include=["*"], file="/srv/models/gemma.gguf")}, [
        "r1: models.gemma.file = '/srv/models/gemma.gguf': expected a path inside the repository such as UD-IQ1_M/model-00001-of-00003.gguf (relative, no '..')",
    ]),
    ("../ in an include pattern", {"models": gemma(include=["*.gguf", "../*"], file=None)}, [
        "r1: models.gemma.include[1] = '../*': expected a pattern inside the repository (relative, no '..')",
    ]),
    ("absolute include pattern", {"models": gemma(include=["/etc/*"], file=None)}, [
        "r1: models.gemma.include[0] = '/etc/*': expected a pattern inside the repository (relative, no '..')",
    ]),
    ("repo climbing out of the Hub namespace", {"models": gemma(repo="../admin")}, [
        "r1: models.gemma.repo = '../admin': expected a Hub repository OWNER/NAME such as unsloth/GLM-4.7-GGUF (letters, digits, '-', '_', '.'; no '--' or '..', neither part starting or ending with '-' or '.', not ending in .git)",
    ]),
    ("repo with a double dash", {"models": gemma(repo="acme/gemma--GGUF")}, [
        "r1: models.gemma.repo = 'acme/gemma--GGUF': expected a Hub repository OWNER/NAME such as unsloth/GLM-4.7-GGUF (letters, digits, '-', '_', '.'; no '--' or '..', neither part starting or ending with '-' or '.', not ending in .git)",
    ]),
    ("repo as a URL", {"models": gemma(repo="https://huggingface.co/acme/gemma-GGUF")}, [
        "r1: models.gemma.repo = 'https://huggingface.co/acme/gemma-GGUF': expected a Hub repository OWNER/NAME such as unsloth/GLM-4.7-GGUF (did you mean acme/gemma-GGUF?)",
    ]),
    ("repo without owner", {"models": gemma(repo="gemma-GGUF")}, [
        "r1: models.gemma.repo = 'gemma-GGUF': expected a Hub repository OWNER/NAME such as unsloth/GLM-4.7-GGUF",
    ]),
    ("port below 1024", {"services": [svc(port=80)]}, [
        'r1: services[0].port = 80: expected a port from 1024 to 65535 (the server runs as an unprivileged user without capabilities: it cannot bind below 1024)',
    ]),
    ("port 0", {"services": [svc(port=0)]}, ['r1: services[0].port = 0: expected a value of at least 1']),
    ("port beyond 65535", {"services": [svc(port=80800)]}, ['r1: services[0].port = 80800: expected a value of at most 65535']),
    ("bind address 0.0.0.300", {"services": [svc(host="0.0.0.300")]}, [
        "r1: services[0].host = '0.0.0.300': expected an IPv4 address such as 0.0.0.0, 127.0.0.1 or 192.168.1.50 (four numbers from 0 to 255)",
    ]),
    ("bind address with a port", {"services": [svc(host="0.0.0.0:8000")]}, [
        "r1: services[0].host = '0.0.0.0:8000': expected an address without a port (the port is the `port` key)",
    ]),
    ("bind host name with a port", {"services": [svc(host="localhost:8080")]}, [
        "r1: services[0].host = 'localhost:8080': expected an address without a port (the port is the `port` key)",
    ]),
    ("bracketed IPv6 with a port", {"services": [svc(host="[::]:8080")]}, [
        "r1: services[0].host = '[::]:8080': expected an address without a port (the port is the `port` key)",
    ]),
    ("bracketed IPv6", {"services": [svc(host="[::1]")]}, ["r1: services[0].host = '[::1]': expected an IPv6 address without brackets, such as :: or ::1"]),
    ("bind address a URL", {"services": [svc(host="http://0.0.0.0")]}, [
        "r1: services[0].host = 'http://0.0.0.0': expected an IP address (0.0.0.0, 127.0.0.1, ::) or a host name",
    ]),
    ("bind address empty", {"services": [svc(host="")]}, ["r1: services[0].host = '': expected a non-empty value"]),
    ("CUDA architecture 860", {"build_cuda_architectures": [860]}, [
        'r1: build_cuda_architectures[0] = 860: expected a CUDA architecture nvcc knows, such as 86 (RTX 30xx), 89 (RTX 40xx), 90 (H100) or 120 (RTX 50xx): 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121',
    ]),
    ("CUDA architecture 8.6", {"build_cuda_architectures": [8.6]}, [
        'r1: build_cuda_architectures[0] = 8.6: expected a CUDA architecture nvcc knows, such as 86 (RTX 30xx), 89 (RTX 40xx), 90 (H100) or 120 (RTX 50xx): 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121 (write 86, as CMake does)',
    ]),
    ("CUDA architecture sm_86", {"build_cuda_architectures": ["sm_86"]}, [
        "r1: build_cuda_architectures[0] = 'sm_86': expected a CUDA architecture nvcc knows, such as 86 (RTX 30xx), 89 (RTX 40xx), 90 (H100) or 120 (RTX 50xx): 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121 (write 86, as CMake does)",
    ]),
    ("CUDA architecture auto in a list", {"build_cuda_architectures": ["auto"]}, [
        "r1: build_cuda_architectures[0] = 'auto': expected a CUDA architecture nvcc knows, such as 86 (RTX 30xx), 89 (RTX 40xx), 90 (H100) or 120 (RTX 50xx): 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121 (auto is written alone, without a list: 'auto')",
    ]),
    ("CUDA architectures empty", {"build_cuda_architectures": []}, ['r1: build_cuda_architectures = []: expected `auto` or at least one architecture such as [86]']),
    ("CUDA architecture True", {"build_cuda_architectures": [True]}, [
        'r1: build_cuda_architectures[0] = True: expected a CUDA architecture nvcc knows, such as 86 (RTX 30xx), 89 (RTX 40xx), 90 (H100) or 120 (RTX 50xx): 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121',
    ]),
    ("power limit 5000", {"power_limit_w": 5000}, [
        "r1: power_limit_w = 5000: expected watts from 20 to 1500 (no GPU accepts 5000 W; the card's own range is checked on the rig)",
    ]),
    ("power limit 0", {"power_limit_w": 0}, [
        "r1: power_limit_w = 0: expected watts from 20 to 1500 (no GPU accepts 0 W; the card's own range is checked on the rig)",
    ]),
    ("power limit -5 for one GPU", {"power_limits_w": {1: -5}}, [
        "r1: power_limits_w[1] = -5: expected watts from 20 to 1500 (no GPU accepts -5 W; the card's own range is checked on the rig)",
    ]),
    ("git URL without a scheme", {"build_git_url": "github.com/x/y"}, [
        "r1: build_git_url = 'github.com/x/y': expected a git URL such as https://github.com/ggml-org/llama.cpp, git@host:owner/repo.git or an absolute path",
    ]),
    ("git URL with no repository", {"build_git_url": "https://github.com"}, [
        "r1: build_git_url = 'https://github.com': expected a git URL such as https://github.com/ggml-org/llama.cpp, git@host:owner/repo.git or an absolute path",
    ]),
    ("git URL as a clone command", {"build_git_url": "git clone https://github.com/ggml-org/llama.cpp"}, [
        "r1: build_git_url = 'git clone https://github.com/ggml-org/llama.cpp': expected a git URL without spaces",
    ]),
    ("git ref with a space", {"build_ref": "main branch"}, [
        "r1: build_ref = 'main branch': expected a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not starting with '-' or '.')",
    ]),
    ("git ref ..", {"build_ref": ".."}, [
        "r1: build_ref = '..': expected a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not starting with '-' or '.')",
    ]),
    ("git ref like an option", {"build_ref": "--upload-pack=touch"}, [
        "r1: build_ref = '--upload-pack=touch': expected a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not starting with '-' or '.')",
    ]),
    ("git ref relative to a branch", {"build_ref": "master~1"}, [
        "r1: build_ref = 'master~1': expected a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not starting with '-' or '.')",
    ]),
    ("git ref empty", {"build_ref": ""}, ["r1: build_ref = '': expected a non-empty value"]),
    ("model revision range", {"models": gemma(revision="v1..v2")}, [
        "r1: models.gemma.revision = 'v1..v2': expected a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not starting with '-' or '.')",
    ]),
    ("model revision empty", {"models": gemma(revision="")}, ["r1: models.gemma.revision = '': expected a non-empty value"]),
    ("relative build_root", {"build_root": "opt/llamarig"}, ["r1: build_root = 'opt/llamarig': expected an absolute path such as /opt/llamarig"]),
    ("build_root with a trailing slash", {"build_root": "/opt/llamarig/"}, [
        "r1: build_root = '/opt/llamarig/': expected an absolute path such as /opt/llamarig, without '..', '//', a trailing '/' or spaces",
    ]),
    ("build_root /", {"build_root": "/"}, ["r1: build_root = '/': expected a directory below / (llamarig writes into it)"]),
    ("relative models_dir", {"models_dir": "models"}, ["r1: models_dir = 'models': expected an absolute path such as /opt/llamarig"]),
    ("models_dir with ..", {"models_dir": "/var/lib/llamarig/../models"}, [
        "r1: models_dir = '/var/lib/llamarig/../models': expected an absolute path such as /opt/llamarig, without '..', '//', a trailing '/' or spaces",
    ]),
    ("relative build_ccache_dir", {"build_ccache_dir": "ccache"}, ["r1: build_ccache_dir = 'ccache': expected an absolute path such as /opt/llamarig"]),
    ("hub_endpoint without a scheme", {"hub_endpoint": "huggingface.co"}, [
        "r1: hub_endpoint = 'huggingface.co': expected an http:// or https:// URL such as https://huggingface.co",
    ]),
    ("hub_endpoint with a port that is not a number", {"hub_endpoint": "https://hf-mirror.lan:port"}, [
        "r1: hub_endpoint = 'https://hf-mirror.lan:port': expected an http:// or https:// URL with a numeric port",
    ]),
    ("hub_client of another package", {"hub_client": "requests>=2"}, [
        "r1: hub_client = 'requests>=2': expected a requirement of huggingface_hub, such as 'huggingface_hub>=1.0,<3'",
    ]),
    ("hub_client a pip command", {"hub_client": "pip install huggingface_hub"}, [
        "r1: hub_client = 'pip install huggingface_hub': expected a pip requirement such as 'huggingface_hub>=1.0,<3'",
    ]),
    ("hub_client cut short", {"hub_client": "huggingface_hub>="}, [
        "r1: hub_client = 'huggingface_hub>=': expected a pip requirement such as 'huggingface_hub>=1.0,<3'",
    ]),
    ("hub_token_env with a dash", {"hub_token_env": "HF-TOKEN"}, [
        "r1: hub_token_env = 'HF-TOKEN': expected an environment variable name: letters, digits and '_', not starting with a digit",
    ]),
    ("hub_token_file empty", {"hub_token_file": ""}, ["r1: hub_token_file = '': expected a non-empty value"]),
    ("Debian package with a space", {"build_packages": ["build essential", "cmake"]}, [
        "r1: build_packages[0] = 'build essential': expected a Debian package name such as build-essential (lower case letters, digits, '+', '-', '.') (did you mean build-essential?)",
    ]),
    ("Debian package capitalised", {"build_packages": ["CMake"]}, [
        "r1: build_packages[0] = 'CMake': expected a Debian package name such as build-essential (lower case letters, digits, '+', '-', '.') (did you mean cmake?)",
    ]),
    ("Debian package with a version", {"build_packages": ["cmake=3.28.3-1"]}, [
        "r1: build_packages[0] = 'cmake=3.28.3-1': expected a Debian package name such as build-essential (lower case letters, digits, '+', '-', '.'; no version or architecture)",
    ]),
    ("CMake option without -D", {"build_cmake_options": ["GGML_CUDA_FA_ALL_QUANTS=ON"]}, [
        "r1: build_cmake_options[0] = 'GGML_CUDA_FA_ALL_QUANTS=ON': expected a CMake cache option -DNAME=VALUE such as -DGGML_CUDA_FA_ALL_QUANTS=ON",
    ]),
    ("CMake option with a space after -D", {"build_cmake_options": ["-D GGML_CUDA_FA_ALL_QUANTS=ON"]}, [
        "r1: build_cmake_options[0] = '-D GGML_CUDA_FA_ALL_QUANTS=ON': expected a CMake cache option -DNAME=VALUE such as -DGGML_CUDA_FA_ALL_QUANTS=ON",
    ]),
    ("CMake target with a space", {"build_targets": ["llama-server", "llama bench"]}, ["r1: build_targets[1] = 'llama bench': expected a CMake target name such as llama-server"]),
    ("no llama-server target", {"build_targets": ["llama-bench"]}, ["r1: build_targets = ['llama-bench']: expected a list that includes llama-server"]),
    ("tune_forks not a list", {"tune_forks": "ik_llama.cpp"}, ["r1: tune_forks = 'ik_llama.cpp': expected a list"]),
    ("tune_forks unknown fork", {"tune_forks": [{"build_fork": "vllm", "build_git_url": "u", "build_ref": "main"}]},
     ["r1: tune_forks[0].build_fork = 'vllm': expected one of llama.cpp, ik_llama.cpp"]),
    ("tune_forks without a ref", {"tune_forks": [{"build_fork": "ik_llama.cpp", "build_git_url": "u"}]},
     ["r1: tune_forks[0].build_ref = (missing): expected this key to be set"]),
    ("tune_forks without llama-server", {"tune_forks": [{"build_fork": "ik_llama.cpp", "build_git_url": "u",
                                                         "build_ref": "m", "build_targets": ["llama-bench"]}]},
     ["r1: tune_forks[0].build_targets = ['llama-bench']: expected a list that includes llama-server"]),
    # --- one model over several rigs: rpc_servers on a worker, rpc_workers on a main rig's service
    ("rpc server binding every address", {"services": [], "rpc_servers": [{"name": "w", "host": "0.0.0.0"}]}, [
        "r1: rpc_servers[0].host = '0.0.0.0': expected one address of a private network (rpc-server has no authentication: a wildcard bind needs any_address: true)",
        'r1: rpc_servers[0].address = None: expected the address main rigs connect to (host binds a wildcard)',
    ]),
    ("rpc server without an address", {"services": [], "rpc_servers": [{"name": "w"}]}, [
        'r1: rpc_servers[0].host = (missing): expected this key to be set',
    ]),
    ("rpc server port out of range", {"services": [], "rpc_servers": [{"name": "w", "host": "10.0.0.2", "port": 70000}]}, [
        'r1: rpc_servers[0].port = 70000: expected a value of at most 65535',
    ]),
    ("rpc server lends a GPU the rig lacks", {"services": [], "rpc_servers": [{"name": "w", "host": "10.0.0.2", "gpus": [5]}]}, [
        'r1: rpc_servers[0].gpus[0] = 5: expected a GPU index below 2 (the rig declares 2 GPU(s))',
    ]),
    ("rpc server lends a service's GPU", {"rpc_servers": [{"name": "w", "host": "10.0.0.2", "gpus": [0]}]}, [
        'r1: rpc_servers[0].gpus = [0]: expected GPUs no service of this rig uses (GPU 0 is in services[0])',
    ]),
    ("rpc servers of one name", {"services": [], "rpc_servers": [{"name": "w", "host": "10.0.0.2", "gpus": [0]}, {"name": "w", "host": "10.0.0.2", "port": 50053, "gpus": [1]}]}, [
        "r1: rpc_servers[1].name = 'w': expected a name no other RPC server of this rig has (rpc_servers[0] has it)",
    ]),
    ("rpc server on a service's port", {"services": [svc(gpus=[0])], "rpc_servers": [{"name": "w", "host": "10.0.0.2", "port": 8080, "gpus": [1]}]}, [
        'r1: rpc_servers[0].port = 8080: expected a port no service or other RPC server of this rig uses (services[0] has it)',
    ]),
    ("rpc server bad values", {"services": [], "rpc_servers": [{"name": "W!", "host": "10.0.0.2", "threads": 0, "cache": "yes", "cache_max_gib": 0, "address": "", "any_address": "no"}]}, [
        "r1: rpc_servers[0].address = '': expected a non-empty value",
        "r1: rpc_servers[0].any_address = 'no': expected true or false (Python: True or False): write False, not 'no'",
        "r1: rpc_servers[0].cache = 'yes': expected true or false (Python: True or False): write True, not 'yes'",
        'r1: rpc_servers[0].cache_max_gib = 0: expected a value of at least 1',
        "r1: rpc_servers[0].name = 'W!': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters",
        'r1: rpc_servers[0].threads = 0: expected a value of at least 1',
    ]),
    ("rpc server on ik", {"build_fork": "ik_llama.cpp", "services": [], "rpc_servers": [{"name": "w", "host": "10.0.0.2"}]}, [
        "r1: rpc_servers = ['w']: expected [] on an ik_llama.cpp rig (llamarig runs llama.cpp's rpc-server only; build_fork: llama.cpp)",
    ]),
    ("rpc_workers names no host", [("r1", {"services": [svc(rpc_workers=["r9"])]}), ("r2", W)], [
        "r1: services[0].rpc_workers[0] = 'r9': expected a host of this inventory that declares rpc_servers (those that do: r2)",
    ]),
    ("rpc_workers names the rig itself", [("r1", {"services": [svc(rpc_workers=["r1"])], "rpc_servers": []})], [
        "r1: services[0].rpc_workers[0] = 'r1': expected another rig (a service uses its own GPUs directly, not through RPC)",
    ]),
    ("rpc_workers on another ref", [("r1", {"services": [svc(rpc_workers=["r2"])]}), ("r2", dict(W, build_ref="b9999"))], [
        "r1: services[0].rpc_workers[0] = 'r2': expected a worker building the same llama.cpp (the RPC protocol changes between versions): build_ref is 'b9999' on r2, 'master' here",
    ]),
    ("rpc_workers names an unknown server", [("r1", {"services": [svc(rpc_workers=["r2/office"])]}), ("r2", W)], [
        "r1: services[0].rpc_workers[0] = 'r2/office': expected an RPC server r2 declares (its rpc_servers: garage)",
    ]),
    ("rpc_workers on ik", {**ik(svc(rpc_workers=["r2"]))}, [
        "r1: services[0].rpc_workers = ['r2']: expected [] on an ik_llama.cpp rig (llamarig plans llama.cpp's RPC devices only; build_fork: llama.cpp)",
    ]),
    ("rpc_workers with a space", {"services": [svc(rpc_workers=["r 2"])]}, [
        "r1: services[0].rpc_workers[0] = 'r 2': expected a host of the inventory, or HOST/NAME of one of its rpc_servers, such as garage/gpu1",
    ]),
    ("rpc_workers not a list", {"services": [svc(rpc_workers="r2")]}, [
        "r1: services[0].rpc_workers = 'r2': expected a list, such as ['r2']",
    ]),
    ("a token in the git URL", {"build_git_url": f"https://{SECRET}@github.com/ggml-org/llama.cpp"}, [
        "r1: build_git_url = https://***@github.com/ggml-org/llama.cpp: expected a URL without a password or token in it (it would be written into the build record, the rig's git config and the deploy's output): use a public URL, or a credential helper on the rig",
    ]),
    ("a password in a tune fork's git URL", {"tune_forks": [{"build_fork": "ik_llama.cpp", "build_ref": "main",
                                                            "build_git_url": f"ssh://git:{SECRET}@git.lan/ik_llama.cpp"}]}, [
        "r1: tune_forks[0].build_git_url = ssh://git:***@git.lan/ik_llama.cpp: expected a URL without a password or token in it (it would be written into the build record, the rig's git config and the deploy's output): use a public URL, or a credential helper on the rig",
    ]),
    ("a second port in extra_args", {"services": [svc(extra_args=["--port", "9000"])]}, [
        "r1: services[0].extra_args = '--port': expected no --port in extra_args (the key port sets it: a second one would be the one llama-server uses, and the unit's checks would look at another)",
    ]),
    ("another model in extra_args", {"services": [svc(extra_args=["-m=/srv/other.gguf"])]}, [
        "r1: services[0].extra_args = '-m=/srv/other.gguf': expected no -m in extra_args (the service's model (models.NAME) sets it: a second one would be the one llama-server uses, and the unit's checks would look at another)",
    ]),
    ("flash attention off in extra_args", {"services": [svc(extra_args=["-fa", "off"])]}, [
        "r1: services[0].extra_args = '-fa': expected no -fa in extra_args (use the key flash_attn: the plan's memory is for that key, and a second flag would be the one llama-server runs)",
    ]),
    ("a context size in extra_args", {"services": [svc(extra_args=["--ctx-size=65536", "--jinja"])]}, [
        "r1: services[0].extra_args = '--ctx-size=65536': expected no --ctx-size in extra_args (use the key ctx_size: the plan's memory is for that key, and a second flag would be the one llama-server runs)",
    ]),
    ("a ubatch and a cache type in extra_args", {"services": [svc(extra_args=["-ub", "4096", "-ctk", "q8_0"])]}, [
        "r1: services[0].extra_args = '-ub': expected no -ub in extra_args (use the key ubatch_size: the plan's memory is for that key, and a second flag would be the one llama-server runs)",
        "r1: services[0].extra_args = '-ctk': expected no -ctk in extra_args (use the key cache_type_k: the plan's memory is for that key, and a second flag would be the one llama-server runs)",
    ]),
    ("service_user root", {"service_user": "root"}, [
        "r1: service_user = 'root': expected a user other than root (the hardened units run the servers unprivileged)",
    ]),
    ("service_user too long for useradd", {"service_user": "llamarig-inference-service-user-1"}, [
        "r1: service_user = 'llamarig-inference-service-user-1': expected a user name of lower-case letters, digits, '-' and '_', at most 32 characters, such as llama",
    ]),
    ("api_key_env with a space", {"services": [svc(api_key_env="CHAT KEY")]}, [
        "r1: services[0].api_key_env = 'CHAT KEY': expected an environment variable name: letters, digits and '_', not starting with a digit",
    ]),
    ("api_key_file empty", {"services": [svc(api_key_file="")]}, ["r1: services[0].api_key_file = '': expected a non-empty value"]),
    ("alias empty", {"services": [svc(alias="")]}, ["r1: services[0].alias = '': expected a non-empty value"]),
    ("extra_args flag and value in one item", {"services": [svc(extra_args=["--ctx-size 8192"])]}, [
        "r1: services[0].extra_args[0] = '--ctx-size 8192': expected one word per item: write ['--ctx-size', '8192'] (or --ctx-size=8192)",
    ]),
    ("extra_args item with a leading space", {"services": [svc(extra_args=[" --jinja"])]}, [
        "r1: services[0].extra_args[0] = ' --jinja': expected an argument without leading or trailing spaces",
    ]),
    ("extra_args empty item", {"services": [svc(extra_args=["--jinja", ""])]}, ["r1: services[0].extra_args[1] = '': expected a non-empty argument"]),

    # --- sizes out of range ---
    ("context size beyond llama-server's int", {"services": [svc(ctx_size=2**31)]}, ['r1: services[0].ctx_size = 2147483648: expected a value of at most 2147483647']),
    ("batch size beyond llama-server's int", {"services": [svc(batch_size=2**31)]}, ['r1: services[0].batch_size = 2147483648: expected a value of at most 2147483647']),
    ("negative ctx_size", {"services": [svc(ctx_size=-1)]}, ['r1: services[0].ctx_size = -1: expected a value of at least 0']),
    ("negative memory_gib", {"gpus": [GPU, {"model": "NVIDIA GeForce RTX 3090", "memory_gib": -24}]}, ['r1: gpus[1].memory_gib = -24: expected a value of at least 1']),
    ("ram_gib 0", {"ram_gib": 0}, ['r1: ram_gib = 0: expected a value of at least 1']),
    ("negative gpu_margin_mib", {"gpu_margin_mib": -512}, ['r1: gpu_margin_mib = -512: expected a value of at least 0']),
    ("build_jobs 0", {"build_jobs": 0}, ['r1: build_jobs = 0: expected a value of at least 1']),
    ("verify_timeout_s 0", {"verify_timeout_s": 0}, ['r1: verify_timeout_s = 0: expected a value of at least 1']),
    ("verify_max_tokens 0", {"verify_max_tokens": 0}, ['r1: verify_max_tokens = 0: expected a value of at least 1']),
    ("verify_prompt empty", {"verify_prompt": ""}, ["r1: verify_prompt = '': expected a non-empty value"]),
    ("include empty", {"models": gemma(include=[], file=None)}, ['r1: models.gemma.include = []: expected at least 1 item(s)']),
    ("n_gpu_layers -2", {"services": [svc(n_gpu_layers=-2)]}, ['r1: services[0].n_gpu_layers = -2: expected a value of at least -1']),
    ("n_cpu_moe -1", {"services": [svc(n_cpu_moe=-1)]}, ['r1: services[0].n_cpu_moe = -1: expected a value of at least 0']),
    ("n_predict -3", {"services": [svc(n_predict=-3)]}, ['r1: services[0].n_predict = -3: expected a value of at least -2']),
    ("reasoning_budget -2", {"services": [svc(reasoning_budget=-2)]}, ['r1: services[0].reasoning_budget = -2: expected a value of at least -1']),
    ("main_gpu -1", {"services": [svc(main_gpu=-1)]}, ['r1: services[0].main_gpu = -1: expected a value of at least 0']),
    ("service GPU -1", {"services": [svc(gpus=[-1])]}, ['r1: services[0].gpus[0] = -1: expected a value of at least 0']),
    ("threads 0", {"services": [svc(threads=0)]}, ['r1: services[0].threads = 0: expected a value of at least 1']),
    ("threads_batch 0", {"services": [svc(threads_batch=0)]}, ['r1: services[0].threads_batch = 0: expected a value of at least 1']),
    ("ubatch_size 0", {"services": [svc(ubatch_size=0)]}, ['r1: services[0].ubatch_size = 0: expected a value of at least 1']),
    ("parallel 0", {"services": [svc(parallel=0)]}, ['r1: services[0].parallel = 0: expected a value of at least 1']),
    ("mla_use 4 on ik", ik(svc(mla_use=4)), ['r1: services[0].mla_use = 4: expected a value of at most 3']),
    ("max_extra_alloc -1 on ik", ik(svc(max_extra_alloc=-1)), ['r1: services[0].max_extra_alloc = -1: expected a value of at least 0']),
    ("max_extra_alloc 256MiB on ik", ik(svc(max_extra_alloc="256MiB")), ["r1: services[0].max_extra_alloc = '256MiB': expected a whole number without quotes or a unit"]),
    ("run_time_repack on on ik", ik(svc(run_time_repack="on")), [
        "r1: services[0].run_time_repack = 'on': expected true or false (Python: True or False): write True, not 'on'",
    ]),
    ("temp negative", {"services": [svc(sampling={"temp": -0.5})]}, ['r1: services[0].sampling.temp = -0.5: expected a value of at least 0']),
    ("top_p above 1", {"services": [svc(sampling={"top_p": 1.5})]}, ['r1: services[0].sampling.top_p = 1.5: expected a value of at most 1']),
    ("top_k negative", {"services": [svc(sampling={"top_k": -1})]}, ['r1: services[0].sampling.top_k = -1: expected a value of at least 0']),
    ("min_p above 1", {"services": [svc(sampling={"min_p": 5})]}, ['r1: services[0].sampling.min_p = 5: expected a value of at most 1']),
    ("repeat_penalty negative", {"services": [svc(sampling={"repeat_penalty": -1.1})]}, ['r1: services[0].sampling.repeat_penalty = -1.1: expected a value of at least 0']),
    ("gpu model empty", {"gpus": [{"model": "", "memory_gib": 24}, GPU]}, ["r1: gpus[0].model = '': expected a non-empty value"]),
    ("gpu without memory_gib", {"gpus": [GPU, {"model": "NVIDIA GeForce RTX 3090"}]}, ['r1: gpus[1].memory_gib = (missing): expected this key to be set']),
    ("service without port", {"services": [{"name": "chat", "model": "gemma"}]}, ['r1: services[0].port = (missing): expected this key to be set']),
    ("service name empty", {"services": [svc(name="")]}, [
        "r1: services[0].name = '': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters",
    ]),
    ("service name too long", {"services": [svc(name="c" * 64)]}, [
        "r1: services[0].name = 'cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters",
    ]),

    # --- several problems on one host, all reported in one run ---
    ("several problems at once", {
        "build_ref": "main branch", "build_jobs": "8", "power_limit_w": 5000, "hub_endpoint": "huggingface.co",
        "models": gemma(include=["../*"], file=None),
        "services": [svc(gpus=[0], port=80, host="0.0.0.0:80", ctx_szie=8192,
                         environment={"HOME": "/root"}, extra_args=["--api-key", SECRET]),
                     {**EMBED, "port": 80, "gpus": [0], "split_mode": "Layer", "sampling": {"temprature": 0.7}}],
    }, [
        "r1: build_jobs = '8': expected a whole number without quotes",
        "r1: hub_endpoint = 'huggingface.co': expected an http:// or https:// URL such as https://huggingface.co",
        "r1: services[0].ctx_szie = (an unknown key): expected a known key (see the README's data reference) (did you mean ctx_size?)",
        "r1: services[1].sampling.temprature = (an unknown key): expected a known key (see the README's data reference) (did you mean temp?)",
        "r1: services[1].split_mode = 'Layer': expected one of none, layer, row, tensor (did you mean layer?)",
        "r1: services[0].extra_args = ['--api-key', ***]: expected no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)",
        'r1: services[1].port = 80: expected a port no other service of this rig uses (services[0] has it)',
        'r1: services[1].gpus = [0]: expected GPUs not used by another service, or shared_gpus: true on both (GPU 0 is also in services[0])',
        "r1: build_ref = 'main branch': expected a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not starting with '-' or '.')",
        "r1: power_limit_w = 5000: expected watts from 20 to 1500 (no GPU accepts 5000 W; the card's own range is checked on the rig)",
        "r1: models.gemma.include[0] = '../*': expected a pattern inside the repository (relative, no '..')",
        "r1: services[0].host = '0.0.0.0:80': expected an address without a port (the port is the `port` key)",
        'r1: services[0].port = 80: expected a port from 1024 to 65535 (the server runs as an unprivileged user without capabilities: it cannot bind below 1024)',
        "r1: services[0].environment = key 'HOME': expected a variable llamarig does not manage: for HOME use nothing: llamarig sets it to the service's state directory",
        'r1: services[1].port = 80: expected a port from 1024 to 65535 (the server runs as an unprivileged user without capabilities: it cannot bind below 1024)',
    ]),
    ("a refused shape does not hide the other problems", {
        "gpus": GPU, "build_targets": "llama-server", "build_git_url": "github.com/ggml-org/llama.cpp",
        "services": [svc(gpus=[0]), {**EMBED, "port": 8080, "gpus": [1]}],
    }, [
        "r1: build_targets = 'llama-server': expected a list, such as ['llama-server']",
        "r1: gpus = {'model': 'NVIDIA GeForce RTX 3090', 'memory_gib': 24}: expected a list: write [{...}] even for one entry (in Python, ({...}) without a trailing comma is not a tuple)",
        'r1: services[1].port = 8080: expected a port no other service of this rig uses (services[0] has it)',
        "r1: build_git_url = 'github.com/ggml-org/llama.cpp': expected a git URL such as https://github.com/ggml-org/llama.cpp, git@host:owner/repo.git or an absolute path",
    ]),
    ("a bare services dict does not hide the rig's problems", {
        "services": svc(), "build_cuda_architectures": [8.6], "models_dir": "models", "hub_client": "requests",
    }, [
        "r1: models_dir = 'models': expected an absolute path such as /opt/llamarig",
        "r1: services = {'name': 'chat', 'model': 'gemma', 'port': 8080}: expected a list: write [{...}] even for one entry (in Python, ({...}) without a trailing comma is not a tuple)",
        'r1: build_cuda_architectures[0] = 8.6: expected a CUDA architecture nvcc knows, such as 86 (RTX 30xx), 89 (RTX 40xx), 90 (H100) or 120 (RTX 50xx): 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121 (write 86, as CMake does)',
        "r1: hub_client = 'requests': expected a requirement of huggingface_hub, such as 'huggingface_hub>=1.0,<3'",
    ]),
    ("refused items do not hide the service's other rules", {
        "services": [svc(gpus=["0"], tensor_split=["1"], extra_args=["--seed", 8192, "--api-key", SECRET],
                         tensor_overrides=[["exps", "CUDA5"]], api_key_env="K", api_key_file="/k"),
                     svc(gpus=[1])],
    }, [
        "r1: services[0].extra_args[1] = 8192: expected a string (in quotes: '8192')",
        "r1: services[0].gpus[0] = '0': expected a whole number without quotes",
        "r1: services[0].tensor_split[0] = '1': expected a number without quotes",
        "r1: services[0].api_key_file = '/k': expected null when api_key_env is set (one source per key)",
        "r1: services[0].extra_args = ['--seed', ..., '--api-key', ***]: expected no --api-key or --api-key-file (a key on the command line is readable by every local user: use api_key_env or api_key_file)",
        "r1: services[1].name = 'chat': expected a name no other service of this rig has (services[0] has it)",
        'r1: services[1].port = 8080: expected a port no other service of this rig uses (services[0] has it)',
    ]),
    ("every refused model key reported, and the other models checked", {
        "models": {"Gemma": gemma()["gemma"], "my model": gemma()["gemma"],
                   "qwen": {"repo": "acme/qwen-GGUF", "include": ["*"], "file": "../qwen.gguf"}},
        "services": [svc(model="Gemma", gpus=[0]), {**EMBED, "model": "my model"}],
    }, [
        "r1: models = key 'Gemma': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters (did you mean gemma?)",
        "r1: models = key 'my model': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters (did you mean my-model?)",
        "r1: models.qwen.file = '../qwen.gguf': expected a path inside the repository such as UD-IQ1_M/model-00001-of-00003.gguf (relative, no '..')",
    ]),
    ("a refused include item does not hide the value checks", {
        "models": gemma(include=["*.gguf", 5]), "build_ref": "main branch",
    }, [
        "r1: models.gemma.include[1] = 5: expected a string (in quotes: '5')",
        "r1: build_ref = 'main branch': expected a branch, tag or 40-hex commit as git names them (no spaces, '..', '~', '^', ':', '?', '*', '[', '\\', and not starting with '-' or '.')",
    ]),
    ("a control character in one environment name, a managed name next to it", {
        "services": [svc(environment={"GGML\nX": "1", "CUDA_VISIBLE_DEVICES": "1", "OK": "2"})],
    }, [
        "r1: services[0].environment = key 'GGML\\nX': expected a string without control characters (it holds '\\n' at position 4: such a character would break the unit file or the command line the value is written into)",
        "r1: services[0].environment = key 'CUDA_VISIBLE_DEVICES': expected a variable llamarig does not manage: for CUDA_VISIBLE_DEVICES use the service's `gpus` (llamarig sets it from them, in PCI bus order)",
    ]),

    # --- problems on two hosts, reported together ---
    ("problems on two hosts", [
        ("r1", {"power_limit_w": 0, "services": [svc(port="8080")]}),
        ("r2", {"services": [svc(gpus=[0, 2]), {**EMBED, "port": 8080}]}),
    ], [
        "r1: services[0].port = '8080': expected a whole number without quotes",
        "r1: power_limit_w = 0: expected watts from 20 to 1500 (no GPU accepts 0 W; the card's own range is checked on the rig)",
        'r2: services[0].gpus[1] = 2: expected a GPU index below 2 (the rig declares 2 GPU(s))',
        'r2: services[1].port = 8080: expected a port no other service of this rig uses (services[0] has it)',
    ]),
    ("one good host and two bad", [
        ("r1", {"servcies": []}),
        ("r2", {}),
        ("r3", {"build_fork": "ik", "models": gemma(repo="gemma")}),
    ], [
        "r1: servcies = (an unknown key): expected a known key (see the README's data reference) (did you mean services?)",
        "r3: build_fork = 'ik': expected one of llama.cpp, ik_llama.cpp (did you mean ik_llama.cpp?)",
        "r3: models.gemma.repo = 'gemma': expected a Hub repository OWNER/NAME such as unsloth/GLM-4.7-GGUF",
    ]),
]


VALID = [
    ("an ssh git URL with a user", {"build_git_url": "git@github.com:ggml-org/llama.cpp.git",
                                    "tune_forks": [{"build_fork": "ik_llama.cpp", "build_ref": "main",
                                                    "build_git_url": "ssh://git@git.lan/ik_llama.cpp"}]}),
    ("a main rig and its RPC worker", [("r1", {"services": [svc(rpc_workers=["r2"])]}), ("r2", W)]),
    ("a worker lending its CPU, bound everywhere by choice",
     [("r1", {"services": [svc(rpc_workers=["r2/cpu"])]}),
      ("r2", {"services": [], "ram_gib": 64, "rpc_servers": [{"name": "cpu", "host": "0.0.0.0", "any_address": True,
                                                               "address": "10.0.0.2", "gpus": []}]})]),
    ("IPv6 any address", {"services": [svc(host="::")]}),
    ("IPv6 loopback", {"services": [svc(host="::1")]}),
    ("IPv4 any address", {"services": [svc(host="0.0.0.0")]}),
    ("a host name", {"services": [svc(host="rig-01.lan")]}),
    ("localhost", {"services": [svc(host="localhost")]}),
    ("90a, 120 and -real architectures", {"build_cuda_architectures": ["90a", 120, "86-real", 89]}),
    ("CMake option whose value holds spaces and dashes", {"build_cmake_options": ["-DCMAKE_CUDA_FLAGS=-O3 -lineinfo",
                                                                                  "-DGGML_CUDA_FA_ALL_QUANTS:BOOL=ON"]}),
    ("extra_args JSON value as its own item", {"services": [svc(extra_args=["--chat-template-kwargs",
                                                                            '{"enable_thinking": false}'])]}),
    ("extra_args --flag=value with spaces", {"services": [svc(extra_args=['--chat-template-kwargs={"a": "b c"}',
                                                                          "--system-prompt=be brief and kind"])]}),
    ("extra_args negative number value", {"services": [svc(extra_args=["--seed", "-1"])]}),
    ("environment values with spaces, quotes, % and $", {"services": [svc(environment={
        "GGML_SCHED": 'a b "c" \'d\' 100% $HOME ${X} \\n', "lower_case_name": "", "_X1": "="})]}),
    ("ports 1024 and 65535", {"services": [svc(port=1024, gpus=[0]), {**EMBED, "port": 65535}]}),
    ("power limits 100 and 600", {"power_limit_w": 100, "power_limits_w": {1: 600, 0: 250.5}}),
    ("a 40-hex build_ref", {"build_ref": "0123456789abcdef0123456789abcdef01234567"}),
    ("a tag build_ref", {"build_ref": "b7100"}),
    ("a branch with a slash", {"build_ref": "feature/sm-graph"}),
    ("a model file in a subfolder", {"models": gemma(include=["Q4_K_M/*"], file="Q4_K_M/gemma-Q4_K_M-00001-of-00002.gguf")}),
    ("a Hub pull-request revision", {"models": gemma(revision="refs/pr/12")}),
    ("unicode in the alias", {"services": [svc(alias="Gemma 3 27B — instruct ✨")]}),
    ("services as a tuple of one", {"services": (svc(),)}),
    ("shared GPUs declared on both services", {"services": [svc(shared_gpus=True), {**EMBED, "gpus": [0, 1], "shared_gpus": True}]}),
    ("a CPU-only service on a GPU rig", {"services": [svc(gpus=[])]}),
    ("a CPU-only rig", {"gpus": [], "services": [svc()]}),
    ("git URLs of every kind", [
        ("r1", {"build_git_url": "git@github.com:ggml-org/llama.cpp.git"}),
        ("r2", {"build_git_url": "ssh://git@git.lan:2222/mirrors/llama.cpp"}),
        ("r3", {"build_git_url": "file:///srv/git/llama.cpp"}),
        ("r4", {"build_git_url": "/srv/git/llama.cpp"}),
    ]),
    ("a Hub mirror on a LAN port", {"hub_endpoint": "http://10.0.0.5:8080"}),
    ("hub_client with a dash and extras", {"hub_client": "huggingface-hub[hf_xet]>=1.0,<3"}),
    ("nulls where null is allowed", {"build_jobs": None, "build_ccache_dir": None, "ram_gib": None,
                                     "hub_token_env": None, "power_limit_w": None}),
    ("context sizes 0 and the int maximum", {"services": [svc(ctx_size=0, gpus=[0]), {**EMBED, "ctx_size": 2**31 - 1}]}),
    ("cache types in any case", {"services": [svc(cache_type_k="Q8_0", cache_type_v="F16")]}),
    ("an ik rig with its own keys", ik(svc(split_mode="graph", cache_type_k="q8_KV", mla_use=3, merge_qkv=True,
                                           fused_moe=False, max_extra_alloc=256, run_time_repack=False))),
    ("overrides on both GPUs and the CPU", {"services": [svc(gpus=[0, 1], tensor_split=[3, 1], tensor_overrides=[
        ["blk\\.(3|4)\\.ffn_.*_exps\\.", "CUDA0"], ["blk\\.5\\.ffn_.*_exps\\.", "CUDA1"], ["ffn_.*_exps\\.", "CPU"]])]}),
    ("placement auto with a context size", {"ram_gib": 128, "services": [svc(placement="auto", ctx_size=65536)]}),
    ("an API key from the controller's environment", {"services": [svc(api_key_env="CHAT_KEY")]}),
    ("model names with digits, '-' and '_'", {"models": {"qwen3_30b-a3b": gemma()["gemma"]}, "services": [svc(model="qwen3_30b-a3b")]}),
    ("pyinfra's own keys beside llamarig's", {"ssh_user": "ops", "_sudo": True}),
    ("nvidia-smi model names with spaces", {"gpus": [{"model": "NVIDIA RTX PRO 6000 Blackwell Workstation Edition", "memory_gib": 95.6}]}),
]


def problems(overrides) -> list[str]:
    if isinstance(overrides, list):
        docs, found = validate_all([(host, rig(**o)) for host, o in overrides])
    else:
        doc, found = validate_host("r1", rig(**overrides))
        docs = {"r1": doc} if doc else {}
    if not found:  # a valid host comes back normalized
        assert all(doc["services"] is not None for doc in docs.values()) and docs
    return [str(p) for p in found]


@pytest.mark.parametrize("label, overrides, expected", BAD, ids=[case[0] for case in BAD])
def test_bad_data_is_reported_exactly(label, overrides, expected):
    assert problems(overrides) == expected


@pytest.mark.parametrize("label, overrides", VALID, ids=[case[0] for case in VALID])
def test_valid_edge_case_passes(label, overrides):
    assert problems(overrides) == []


def test_corpus_size_and_labels():
    labels = [case[0] for case in BAD + VALID]
    assert len(BAD) >= 110 and len(VALID) >= 15
    assert len(labels) == len(set(labels))


def test_no_secret_reaches_a_message():
    for label, overrides, expected in BAD:
        assert not any(SECRET in line or SECRET[:8] in line for line in expected), label


def _key_of(line: str) -> str:
    """The schema key a problem line names: indices dropped, model names and variable names as *."""
    path = re.match(r"r\d+: (.*?) = ", line).group(1)
    path = re.sub(r"\[-?\d+\]", "", path)
    path = re.sub(r"^models\.[^.]+", "models.*", path)
    return re.sub(r"\.environment\..*$", ".environment", path)


def test_every_key_of_the_schema_has_a_mistake_in_the_corpus():
    named = {_key_of(line) for _, _, expected in BAD for line in expected}
    keys = set(SCHEMA)
    keys |= {f"gpus.{k}" for k in GPU_SCHEMA} | {f"models.*.{k}" for k in MODEL_SCHEMA}
    keys |= {f"services.{k}" for k in SERVICE_SCHEMA} | {f"services.sampling.{k}" for k in SAMPLING_SCHEMA}
    keys |= {f"rpc_servers.{k}" for k in RPC_SERVER_SCHEMA}
    assert sorted(keys - named) == []
