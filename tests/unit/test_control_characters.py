"""Every string the schema takes refuses control characters, wherever it sits: a valid value with one control
character inserted at a random (seeded) position is refused with a problem on that key, and the same valid values
without it pass (so a check that refused everything would fail here too).

The string slots are found by walking the schema (SCHEMA and, inside it, the models, services, gpus, sampling
schemas, list items, `tensor_overrides` pairs, dict keys and values); VALUES must name each of them, so a new
string key fails this test until it is listed with valid values.
"""

from __future__ import annotations

import random

import pytest

from llamarig.hostdata.schema import MODEL_SCHEMA, SCHEMA, SERVICE_SCHEMA
from llamarig.hostdata.validate import validate_host

from .helpers import rig

CHARS = [chr(c) for c in range(0x20)] + ["\x7f", "\u2028"]
GPU = {"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}
MODEL = {"repo": "acme/gemma-GGUF", "include": ["*.gguf"], "file": "gemma-00001-of-00003.gguf"}


def svc(**kw) -> dict:
    return {"name": "chat", "model": "gemma", "port": 8080, **kw}


def top(key):
    return lambda v: {key: v}


def service(key, **setup):
    return lambda v: {"services": [svc(**setup, **{key: v})]}


def model(key, **setup):
    return lambda v: {"models": {"gemma": {**MODEL, **setup, key: v}}}


def fork(**kw) -> dict:
    return {"build_fork": "ik_llama.cpp", "build_git_url": "https://github.com/ikawrakow/ik_llama.cpp",
            "build_ref": "main", **kw}


# slot -> (valid values, host data overrides holding the value, the problem path it is reported at)
VALUES = {
    "build_fork": (["llama.cpp", "ik_llama.cpp"], top("build_fork"), "build_fork"),
    "build_git_url": (["https://github.com/ggml-org/llama.cpp", "git@github.com:ikawrakow/ik_llama.cpp.git",
                       "/srv/git/llama.cpp"], top("build_git_url"), "build_git_url"),
    "build_ref": (["master", "b7100", "0123456789abcdef0123456789abcdef01234567", "feature/sm-graph"],
                  top("build_ref"), "build_ref"),
    "build_cuda_architectures": (["auto"], top("build_cuda_architectures"), "build_cuda_architectures"),
    "build_cmake_options[]": (["-DGGML_CUDA_FA_ALL_QUANTS=ON", "-DCMAKE_CUDA_FLAGS=-O3 -lineinfo"],
                              lambda v: {"build_cmake_options": [v]}, "build_cmake_options[0]"),
    "build_targets[]": (["llama-bench", "llama-gguf-split", "llama-cli"],
                        lambda v: {"build_targets": ["llama-server", v]}, "build_targets[1]"),
    "tune_forks[].build_fork": (["ik_llama.cpp", "llama.cpp"], lambda v: {"tune_forks": [fork(build_fork=v)]},
                                "tune_forks[0].build_fork"),
    "tune_forks[].build_git_url": (["https://github.com/ikawrakow/ik_llama.cpp", "/srv/git/ik"],
                                   lambda v: {"tune_forks": [fork(build_git_url=v)]}, "tune_forks[0].build_git_url"),
    "tune_forks[].build_ref": (["main", "b4000"], lambda v: {"tune_forks": [fork(build_ref=v)]},
                               "tune_forks[0].build_ref"),
    "tune_forks[].build_cmake_options[]": (["-DGGML_IQK_FA_ALL_QUANTS=OFF"],
                                           lambda v: {"tune_forks": [fork(build_cmake_options=[v])]},
                                           "tune_forks[0].build_cmake_options[0]"),
    "tune_forks[].build_targets[]": (["llama-bench"], lambda v: {"tune_forks": [fork(build_targets=["llama-server", v])]},
                                     "tune_forks[0].build_targets[1]"),
    "build_root": (["/opt/llamarig", "/srv/llamarig-2"], top("build_root"), "build_root"),
    "build_ccache_dir": (["/var/cache/ccache", "/srv/ccache"], top("build_ccache_dir"), "build_ccache_dir"),
    "build_packages[]": (["cmake", "libcurl4-openssl-dev", "g++"], lambda v: {"build_packages": [v]}, "build_packages[0]"),
    "hub_endpoint": (["https://huggingface.co", "http://10.0.0.5:8080"], top("hub_endpoint"), "hub_endpoint"),
    "hub_token_env": (["HF_TOKEN", "my_hub_token"], top("hub_token_env"), "hub_token_env"),
    "hub_token_file": (["~/.cache/huggingface/token", "/etc/llamarig/hub token"], top("hub_token_file"), "hub_token_file"),
    "hub_client": (["huggingface_hub>=1.0,<3", "huggingface-hub==1.1.0"], top("hub_client"), "hub_client"),
    "models_dir": (["/var/lib/llamarig/models", "/data/models"], top("models_dir"), "models_dir"),
    "service_user": (["llama", "llm_svc"], top("service_user"), "service_user"),
    "verify_prompt": (["Say hello.", "Réponds en une phrase."], top("verify_prompt"), "verify_prompt"),
    "gpus[].model": (["NVIDIA GeForce RTX 3090", "NVIDIA RTX PRO 6000 Blackwell"],
                     lambda v: {"gpus": [{"model": v, "memory_gib": 24}, GPU]}, "gpus[0].model"),
    "models{key}": (["gemma", "qwen3_30b-a3b"],
                    lambda v: {"models": {v: MODEL}, "services": [svc(model=v)]}, "models"),
    "models{value}.repo": (["acme/gemma-GGUF", "unsloth/GLM-4.7-GGUF"], model("repo"), "models.gemma.repo"),
    "models{value}.revision": (["main", "refs/pr/1", "v1.0"], model("revision"), "models.gemma.revision"),
    "models{value}.include[]": (["*.gguf", "UD-IQ1_M/*"], lambda v: {"models": {"gemma": {**MODEL, "include": [v], "file": None}}},
                                "models.gemma.include[0]"),
    "models{value}.file": (["gemma.gguf", "Q4_K_M/gemma-00001-of-00002.gguf"], model("file", include=["*"]),
                           "models.gemma.file"),
    "services[].name": (["chat", "glm-4_7"], service("name"), "services[0].name"),
    "services[].model": (["gemma", "glm47"], lambda v: {"models": {v: MODEL}, "services": [svc(model=v)]},
                         "services[0].model"),
    "services[].host": (["0.0.0.0", "::", "rig.lan"], service("host"), "services[0].host"),
    "services[].cache_type_k": (["q8_0", "f16", "Q4_0"], service("cache_type_k"), "services[0].cache_type_k"),
    "services[].cache_type_v": (["q8_0", "bf16"], service("cache_type_v"), "services[0].cache_type_v"),
    "services[].split_mode": (["layer", "row", "none"], service("split_mode"), "services[0].split_mode"),
    "services[].tensor_overrides[][0]": (["ffn_.*_exps\\.", "blk\\.(3|4)\\.ffn_up"],
                                         lambda v: {"services": [svc(tensor_overrides=[[v, "CPU"]])]},
                                         "services[0].tensor_overrides[0][0]"),
    "services[].tensor_overrides[][1]": (["CPU", "CUDA0", "CUDA1"],
                                         lambda v: {"services": [svc(tensor_overrides=[["exps", v]])]},
                                         "services[0].tensor_overrides[0][1]"),
    "services[].placement": (["auto"], service("placement", ctx_size=8192), "services[0].placement"),
    "services[].reasoning": (["on", "off", "auto"], service("reasoning"), "services[0].reasoning"),
    "services[].flash_attn": (["on", "off", "auto"], service("flash_attn"), "services[0].flash_attn"),
    "services[].alias": (["gemma", "Gemma 3 27B — instruct"], service("alias"), "services[0].alias"),
    "services[].extra_args[]": (["--jinja", '{"enable_thinking": false}', '--chat-template-kwargs={"a": 1}'],
                                lambda v: {"services": [svc(extra_args=[v])]}, "services[0].extra_args[0]"),
    "services[].api_key_env": (["CHAT_KEY", "llama_key"], service("api_key_env"), "services[0].api_key_env"),
    "services[].api_key_file": (["~/.config/llamarig/chat.key", "/etc/llamarig/keys/chat key"],
                                service("api_key_file"), "services[0].api_key_file"),
    "services[].environment{key}": (["GGML_CUDA_GRAPH_OPT", "my_var"],
                                    lambda v: {"services": [svc(environment={v: "1"})]}, "services[0].environment"),
    "services[].environment{value}": (["1", "a b \"c\" $X 100%"],
                                      lambda v: {"services": [svc(environment={"GGML_X": v})]},
                                      "services[0].environment.GGML_X"),
    "services[].rpc_workers[]": (["garage", "office.lan/gpu1"], lambda v: {"services": [svc(rpc_workers=[v])]},
                                 "services[0].rpc_workers[0]"),
    "rpc_servers[].name": (["garage", "gpu-1"], lambda v: _rpc(name=v), "rpc_servers[0].name"),
    "rpc_servers[].host": (["10.0.0.2", "fd00::2", "garage.lan"], lambda v: _rpc(host=v), "rpc_servers[0].host"),
    "rpc_servers[].address": (["10.0.0.2", "garage.lan"], lambda v: _rpc(address=v), "rpc_servers[0].address"),
    # Not a rule of its own in the schema (a list of architectures is checked by validate.py), but its items
    # reach the CMake command line too.
    "build_cuda_architectures[]": (["86", "90a", "120-real"], lambda v: {"build_cuda_architectures": [v]},
                                   "build_cuda_architectures[0]"),
}
OUTSIDE_SCHEMA_RULES = {"build_cuda_architectures[]"}


def _rpc(**kw) -> dict:
    """A rig lending its GPUs through one RPC server (and serving nothing itself)."""
    return {"services": [], "rpc_servers": [{"name": "garage", "host": "10.0.0.2", **kw}]}


def string_slots(schema: dict, prefix: str = ""):
    for key, rule in schema.items():
        yield from _slots(rule, f"{prefix}{key}")


def _slots(rule: dict, where: str):
    types = rule.get("type")
    types = types if isinstance(types, list) else [types]
    if "string" in types:
        yield where
    if "list" in types:
        if isinstance(rule.get("schema"), dict):
            yield from _slots(rule["schema"], where + "[]")
        for i, item in enumerate(rule.get("items", [])):
            yield from _slots(item, f"{where}[{i}]")
    if "dict" in types:
        if isinstance(rule.get("schema"), dict):
            yield from string_slots(rule["schema"], where + ".")
        if "keysrules" in rule:
            yield from _slots(rule["keysrules"], where + "{key}")
        if "valuesrules" in rule:
            yield from _slots(rule["valuesrules"], where + "{value}")


def test_every_string_slot_of_the_schema_is_listed():
    slots = set(string_slots(SCHEMA))
    assert slots == set(VALUES) - OUTSIDE_SCHEMA_RULES
    # the models and services schemas are reached through SCHEMA: every string of theirs is among the slots
    assert {f"models{{value}}.{s}" for s in string_slots(MODEL_SCHEMA)} <= slots
    assert {f"services[].{s}" for s in string_slots(SERVICE_SCHEMA)} <= slots


def problems(overrides: dict):
    return validate_host("r1", rig(**overrides))[1]


@pytest.mark.parametrize("slot", list(VALUES))
def test_valid_values_pass(slot):
    values, build, _ = VALUES[slot]
    for value in values:
        assert [str(p) for p in problems(build(value))] == [], value


def cases(seed: int = 20260):
    """(slot, value with a control character, the character): each character in turn against the slots in
    turn, at a random position of a random valid value; and for every slot a newline at the end (cerberus's
    own patterns let a trailing newline through)."""
    rng = random.Random(seed)
    slots = list(VALUES)
    out = []
    for i in range(len(CHARS) * 15):
        slot, char = slots[i % len(slots)], CHARS[i % len(CHARS)]
        value = rng.choice(VALUES[slot][0])
        at = rng.randrange(len(value) + 1)
        out.append((slot, value[:at] + char + value[at:], char))
    for slot in slots:
        value = rng.choice(VALUES[slot][0])
        out.append((slot, value + "\n", "\n"))
    return out


CASES = cases()


def test_enough_cases_cover_every_character_and_slot():
    assert len(CASES) >= 500
    assert {c for _, _, c in CASES} == set(CHARS)
    assert {s for s, _, _ in CASES} == set(VALUES)


@pytest.mark.parametrize("slot", list(VALUES))
def test_a_control_character_is_refused_on_its_key(slot):
    _, build, path = VALUES[slot]
    for _, bad, char in (c for c in CASES if c[0] == slot):
        found = problems(build(bad))
        assert any(p.path == path and "control characters" in p.expected and f"{char!r}" in p.expected
                   for p in found), (bad, [str(p) for p in found])
        assert not any("\n" in str(p) or "\x00" in str(p) for p in found), [str(p) for p in found]
