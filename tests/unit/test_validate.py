"""Each kind of bad data gives one problem naming the host, the key path, the value and what was expected."""

import pytest

from llamarig.hostdata.validate import format_problems, validate_all, validate_host

from .helpers import rig


def problems_of(data, host="rig1"):
    _, problems = validate_host(host, data)
    return [str(p) for p in problems]


def svc(**kw):
    base = {"name": "chat", "model": "gemma", "port": 8080}
    base.update(kw)
    return base


BAD = [
    ("gpu index the rig lacks", rig(services=[svc(gpus=[0, 2])]),
     "rig1: services[0].gpus[1] = 2: expected a GPU index below 2"),
    ("two services on one port", rig(gpus=[{"model": "RTX 3090", "memory_gib": 24}] * 2,
                                     services=[svc(gpus=[0]), svc(name="b", gpus=[1])]),
     "rig1: services[1].port = 8080: expected a port no other service of this rig uses (services[0] has it)"),
    ("tensor split length", rig(services=[svc(tensor_split=[1, 1, 1])]),
     "rig1: services[0].tensor_split = [1, 1, 1]: expected 2 proportion(s), one per service GPU"),
    ("override regex does not compile", rig(services=[svc(tensor_overrides=[["blk\\.(3|4", "CPU"]])]),
     "rig1: services[0].tensor_overrides[0][0] = 'blk\\\\.(3|4': expected a regular expression that compiles"),
    ("override names a device the service lacks", rig(services=[svc(gpus=[0], tensor_overrides=[["exps", "CUDA1"]])]),
     "rig1: services[0].tensor_overrides[0][1] = 'CUDA1': expected a device of this service: CPU, CUDA0"),
    ("undeclared model", rig(services=[svc(model="glm")]),
     "rig1: services[0].model = 'glm': expected a model declared under `models` (declared: gemma)"),
    ("power limit not positive", rig(power_limit_w=-5),
     "rig1: power_limit_w = -5: expected watts from 20 to 1500 (no GPU accepts -5 W; the card's own range is checked on the rig)"),
    ("power limit not a number", rig(power_limit_w="350W"),
     "rig1: power_limit_w = '350W': expected a number without quotes"),
    ("port out of range", rig(services=[svc(port=70000)]),
     "rig1: services[0].port = 70000: expected a value of at most 65535"),
    ("unknown cache type", rig(services=[svc(cache_type_k="q3_0")]),
     "rig1: services[0].cache_type_k = 'q3_0': expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (did you mean q8_0?)"),
    ("cache type of the other fork", rig(services=[svc(cache_type_k="q8_KV")]),
     "rig1: services[0].cache_type_k = 'q8_KV': expected one of f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1 (llama.cpp)"),
    ("split mode of the other fork", rig(services=[svc(split_mode="graph")]),
     "rig1: services[0].split_mode = 'graph': expected one of none, layer, row, tensor (llama.cpp)"),
    ("ik-only key on a llama.cpp rig", rig(services=[svc(merge_qkv=True)]),
     "rig1: services[0].merge_qkv = True: expected unset: merge_qkv is an ik_llama.cpp setting and this rig builds llama.cpp"),
    ("llama.cpp-only key on an ik rig", rig(build_fork="ik_llama.cpp", services=[svc(reasoning="off")]),
     "rig1: services[0].reasoning = 'off': expected unset: reasoning is an llama.cpp setting and this rig builds ik_llama.cpp"),
    ("mmap true on ik", rig(build_fork="ik_llama.cpp", services=[svc(mmap=True)]),
     "rig1: services[0].mmap = True: expected ik_llama.cpp has no --mmap"),
    ("missing service port", rig(services=[{"name": "chat", "model": "gemma"}]),
     "rig1: services[0].port = (missing): expected this key to be set"),
    ("unknown key (typo)", rig(servics=[]),
     "rig1: servics = (an unknown key): expected a known key (see the README's data reference) (did you mean services?)"),
    ("unknown fork", rig(build_fork="vllm"),
     "rig1: build_fork = 'vllm': expected one of llama.cpp, ik_llama.cpp"),
    ("bad cuda architectures", rig(build_cuda_architectures="ampere"),
     "rig1: build_cuda_architectures = 'ampere': expected `auto` or a list"),
    ("overlapping GPUs not declared shared", rig(services=[svc(gpus=[0, 1]), svc(name="b", port=8081, gpus=[1])]),
     "rig1: services[1].gpus = [1]: expected GPUs not used by another service, or shared_gpus: true on both"),
    ("power limit for a GPU the rig lacks", rig(power_limits_w={5: 200}),
     "rig1: power_limits_w[5] = 200: expected a GPU index below 2"),
    ("service name with spaces", rig(services=[svc(name="my chat")]),
     "rig1: services[0].name = 'my chat': expected a name of lower-case letters, digits, '-' and '_', starting with a letter or a digit, at most 63 characters"),
    ("service name taken by llamarig", rig(services=[svc(name="power")]),
     "rig1: services[0].name = 'power': expected a name other than power"),
    ("no llama-server target", rig(build_targets=["llama-bench"]),
     "rig1: build_targets = ['llama-bench']: expected a list that includes llama-server"),
    ("model file outside include", rig(models={"gemma": {"repo": "a/b", "include": ["Q4/*"], "file": "Q8/x.gguf"}}),
     "rig1: models.gemma.file = 'Q8/x.gguf': expected a file matched by include ['Q4/*']"),
]


@pytest.mark.parametrize("label,data,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_data_is_named_precisely(label, data, expected):
    found = problems_of(data)
    assert any(p.startswith(expected) for p in found), found


def test_good_rig_has_no_problems():
    assert problems_of(rig(services=[svc(gpus=[0, 1], tensor_split=[3, 1],
                                         tensor_overrides=[["blk\\.1\\.ffn_.*_exps", "CUDA1"], ["exps", "CPU"]])])) == []


def test_shared_gpus_allowed_when_both_declare_it():
    data = rig(services=[svc(gpus=[0], shared_gpus=True), svc(name="b", port=8081, gpus=[0], shared_gpus=True)])
    assert problems_of(data) == []


def test_pyinfra_connection_keys_are_not_llamarig_keys():
    assert problems_of(rig(ssh_hostname="127.0.0.1", ssh_port=2222, _sudo=True)) == []


def test_all_hosts_reported_together():
    docs, problems = validate_all([("a", rig(power_limit_w=0)), ("b", rig()), ("c", rig(services=[svc(port=0)]))])
    assert set(docs) == {"b"}
    text = format_problems(problems)
    assert "a: power_limit_w = 0" in text and "c: services[0].port = 0" in text
    assert text.startswith("llamarig: 2 problem(s)")
