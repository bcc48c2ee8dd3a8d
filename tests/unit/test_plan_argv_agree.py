"""The plan and the server agree: every setting the planner sized memory for is in the service's
arguments, or is the fork's own default (llamarig/release/placements.py FORK_DEFAULTS)."""

from __future__ import annotations

import itertools

import pytest

from llamarig.hostdata.validate import validate_host
from llamarig.planner import memory
from llamarig.release.flags import server_args
from llamarig.release.placements import FORK_DEFAULTS, settings

from .helpers import rig

TRAINED = 32768

DECLARED = {
    "ubatch_size": [None, 128, 4096],
    "batch_size": [None, 1024, 8192],
    "parallel": [None, 1, 4],
    "flash_attn": [None, "on", "off"],
    "cache_type_k": [None, "q8_0"],
    "ctx_size": [None, 8192],
    "extra_args": [[], ["--swa-full"], ["-kvu"], ["--kv-unified", "--no-kv-unified"], ["-nkvo"], ["-rtr"]],
}
LLAMA_ONLY = ("--swa-full", "-kvu", "--kv-unified")
IK_ONLY = ("-rtr",)


class _Model:
    n_ctx_train = TRAINED


def _value(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


@pytest.mark.parametrize("fork", ["llama.cpp", "ik_llama.cpp"])
def test_every_planned_setting_is_an_argument_or_the_forks_default(fork):
    checked = 0
    for values in itertools.product(*DECLARED.values()):
        svc = {"name": "chat", "model": "gemma", "port": 8080} | {k: v for k, v in zip(DECLARED, values)
                                                                 if v not in (None, [])}
        if fork == "ik_llama.cpp" and set(LLAMA_ONLY) & set(svc.get("extra_args", [])):
            continue  # ik_llama.cpp has no --swa-full and no --kv-unified
        if fork == "llama.cpp" and set(IK_ONLY) & set(svc.get("extra_args", [])):
            continue  # llama.cpp has no run-time repack
        doc, problems = validate_host("r1", rig(build_fork=fork, services=[svc]))
        assert problems == [], problems
        service = doc["services"][0]
        s = settings(doc, service, _Model())
        argv = server_args(service, "/m.gguf", fork, None)
        # both forks run min(--ubatch-size, --batch-size)
        assert s.ubatch == min(int(_value(argv, "--ubatch-size") or FORK_DEFAULTS["ubatch"]),
                               int(_value(argv, "--batch-size") or FORK_DEFAULTS["batch"]))
        assert s.parallel == (int(_value(argv, "--parallel")) if "--parallel" in argv else None)
        fa = _value(argv, "--flash-attn")
        assert s.flash_attn == (FORK_DEFAULTS["flash_attn"] if fa is None else fa != "off")
        assert s.cache_k == (_value(argv, "--cache-type-k") or FORK_DEFAULTS["cache"])
        assert s.cache_v == (_value(argv, "--cache-type-v") or FORK_DEFAULTS["cache"])
        assert s.ctx == int(_value(argv, "--ctx-size") or TRAINED)
        assert s.swa_full == ("--swa-full" in argv)
        # the last of --kv-unified / --no-kv-unified wins; neither: unified exactly when slots are automatic
        switches = [w for w in argv if w in ("-kvu", "--kv-unified", "--no-kv-unified")]
        want_unified = (switches[-1] != "--no-kv-unified") if switches else "--parallel" not in argv
        assert memory.unified(s) == want_unified, (argv, s)
        assert s.kv_offload == ("-nkvo" not in argv and "--no-kv-offload" not in argv)
        assert s.repack == ("-rtr" in argv or "--run-time-repack" in argv)
        checked += 1
    assert checked >= 100


def test_the_typed_repack_key_is_planned_as_its_flag():
    svc = {"name": "chat", "model": "gemma", "port": 8080, "run_time_repack": True}
    doc, problems = validate_host("r1", rig(build_fork="ik_llama.cpp", services=[svc]))
    assert problems == [], problems
    service = doc["services"][0]
    assert "--run-time-repack" in server_args(service, "/m.gguf", "ik_llama.cpp", None)
    assert settings(doc, service, _Model()).repack
    assert not settings(doc, {**service, "run_time_repack": None}, _Model()).repack
