"""Reading accepted flags from real --help output of both forks (tests/unit/data, from builds of the pinned sources)."""

from pathlib import Path

import pytest

from llamarig.release.flags import server_args
from llamarig.forks.helpflags import accepted_flags, parse_help, unknown_flags

DATA = Path(__file__).parent / "data"


def help_of(fork):
    return (DATA / f"help-{fork}.txt").read_text()


def test_mainline_help():
    flags = parse_help(help_of("llama.cpp"))
    for flag in ("-t", "--threads", "-ot", "--override-tensor", "-ngl", "--gpu-layers", "--n-gpu-layers",
                 "--jinja", "--no-jinja", "-kvu", "--no-kv-unified", "--fit", "--reasoning", "--load-mode"):
        assert flag in flags, flag
    assert "--no-mmap" not in flags  # removed from llama.cpp's parser at this commit
    assert "number" not in flags and "N" not in flags
    assert len(flags) > 250


def test_ik_help_and_what_it_leaves_out():
    listed = parse_help(help_of("ik_llama.cpp"))
    assert {"-ger", "--grouped-expert-routing", "-smgs", "--no-mmap", "-mla", "--temp"} <= listed
    assert "--override-tensor" not in listed  # its parser accepts it all the same
    accepted = accepted_flags("ik_llama.cpp", help_of("ik_llama.cpp"))
    assert {"--override-tensor", "--alias", "--n-cpu-moe", "--merge-qkv"} <= accepted
    assert "--reasoning" not in accepted and "--no-jinja" not in accepted


@pytest.mark.parametrize("fork,argv,unknown", [
    ("llama.cpp", ["--model", "m", "--n-predict", "-1", "--no-mmap", "--jinja", "--bogus=1"], ["--no-mmap", "--bogus"]),
    ("llama.cpp", ["--model", "m", "--override-tensor", "x=CPU", "--fit", "off", "--threads_batch", "4"], []),
    ("ik_llama.cpp", ["--model", "m", "--split-mode", "graph", "-fmoe", "--no-jinja"], ["-fmoe", "--no-jinja"]),
    ("ik_llama.cpp", ["--model", "m", "--override-tensor", "x=CPU", "--no-mmap", "-ger"], []),
])
def test_unknown_flags(fork, argv, unknown):
    assert unknown_flags(argv, accepted_flags(fork, help_of(fork))) == unknown


def test_every_flag_llamarig_renders_for_ik_is_accepted_by_ik():
    service = {"alias": "a", "host": "h", "port": 1, "ctx_size": 1, "n_predict": -1, "n_gpu_layers": 99,
               "split_mode": "graph", "main_gpu": 0, "tensor_split": [1, 1], "n_cpu_moe": 1, "cache_type_k": "q8_0",
               "cache_type_v": "q8_0", "threads": 1, "threads_batch": 1, "batch_size": 1, "ubatch_size": 1,
               "parallel": 1, "flash_attn": "on", "reasoning_budget": 0, "max_extra_alloc": 1, "max_gpu": 1,
               "mla_use": 3, "attention_max_batch": 1, "tensor_overrides": [["x", "CPU"]], "cpu_moe": True,
               "mmap": False, "jinja": True, "fit": True, "grouped_expert_routing": True, "merge_qkv": True,
               "split_mode_graph_scheduling": True, "run_time_repack": True, "fused_moe": False,
               "sampling": {"temp": 1, "top_p": 1, "top_k": 1, "min_p": 0, "repeat_penalty": 1}}
    argv = server_args(service, "/m", "ik_llama.cpp")
    assert unknown_flags(argv, accepted_flags("ik_llama.cpp", help_of("ik_llama.cpp"))) == []


def test_every_flag_llamarig_renders_for_mainline_is_known_except_mmap():
    service = {"alias": "a", "host": "h", "port": 1, "ctx_size": 1, "n_predict": -1, "n_gpu_layers": 99,
               "split_mode": "layer", "main_gpu": 0, "tensor_split": [1, 1], "n_cpu_moe": 1, "cache_type_k": "q8_0",
               "cache_type_v": "q8_0", "threads": 1, "threads_batch": 1, "batch_size": 1, "ubatch_size": 1,
               "parallel": 1, "flash_attn": "on", "reasoning": "off", "reasoning_budget": 0,
               "tensor_overrides": [["x", "CPU"]], "cpu_moe": True, "mmap": False, "jinja": False, "fit": False,
               "sampling": {"temp": 1, "top_p": 1, "top_k": 1, "min_p": 0, "repeat_penalty": 1}}
    argv = server_args(service, "/m", "llama.cpp")
    # --no-mmap: older llama.cpp (the seeds') has it, this commit replaced it with --load-mode.
    assert unknown_flags(argv, accepted_flags("llama.cpp", help_of("llama.cpp"))) == ["--no-mmap"]
