"""Each fork is the planner's oracle: on header-only files of every architecture the planner sizes, the
pinned tree's own code (built in a container rig's build tree: testbed/oracle.py) sizes the KV cache and
the recurrent state at several contexts, cache types, slot counts, ubatch sizes, with or without
--swa-full (llama.cpp) and in every MLA mode (ik_llama.cpp), and the planner's figures must be the same
(within 1 MiB; in practice to the byte, or to the two decimals the forks log).

CPU builds have one device, so these are totals over every layer; how layers are spread over GPUs is the
planner's bookkeeping over the same per-layer figures (tests/unit/test_plan*.py).
"""

from __future__ import annotations

import pytest

from llamarig.planner import architectures, memory
from llamarig.planner.architectures import ArchitectureError
from llamarig.planner.gguf import read_model
from llamarig.planner.memory import MiB, Settings
from testbed.arch_headers import HEADERS
from testbed.oracle import Case, Oracle, OracleError

pytestmark = pytest.mark.slow

CASES = [
    Case(ctx=4096, seqs=1),
    Case(ctx=32768, seqs=1, cache_k="q8_0", cache_v="q8_0"),
    Case(ctx=131072, seqs=1, cache_k="q4_0", cache_v="q4_0", ubatch=4096, batch=4096),
    Case(ctx=8192, seqs=4),                                     # four slots, a cache each
    Case(ctx=16384, seqs=4, kv_unified=True),                   # llama-server's automatic slots
    Case(ctx=16384, seqs=2, kv_unified=True),                   # two slots, --kv-unified
    Case(ctx=8192, seqs=2, swa_full=True, ubatch=1024),
    Case(ctx=12000, seqs=3, cache_k="q8_0", cache_v="q8_0"),  # padding
    Case(ctx=6000, seqs=1, flash_attn=False),
]


IK_CASES = [
    Case(ctx=4096),
    Case(ctx=8192, seqs=4),
    Case(ctx=6000, seqs=3, cache_k="q8_0", cache_v="q8_0"),
    Case(ctx=5000, seqs=2, flash_attn=False),
    Case(ctx=16384, cache_k="q4_0", cache_v="q4_0"),
    Case(ctx=4096, mla=0), Case(ctx=4096, mla=1), Case(ctx=4096, mla=2),
    Case(ctx=4096, mla=1, flash_attn=False), Case(ctx=4096, mla=2, flash_attn=False),
]


def settings(case: Case, fork: str = "llama.cpp") -> Settings:
    """The planner's view of the server started as ``case``: llama.cpp's automatic slots are a unified cache
    of 4."""
    if fork == "ik_llama.cpp":
        return Settings(fork=fork, ctx=case.ctx, parallel=case.seqs, cache_k=case.cache_k, cache_v=case.cache_v,
                        ubatch=case.ubatch, flash_attn=case.flash_attn, mla=case.mla)
    auto = case.kv_unified and case.seqs == 4
    return Settings(ctx=case.ctx, parallel=None if auto else case.seqs, cache_k=case.cache_k, cache_v=case.cache_v,
                    ubatch=case.ubatch, flash_attn=case.flash_attn, swa_full=case.swa_full,
                    kv_unified=True if case.kv_unified and not auto else None)


def planned(model, case: Case, fork: str = "llama.cpp") -> tuple[int, int, int]:
    """(KV bytes, recurrent-state bytes, layers with a KV cache) as the planner sizes them."""
    costs = memory.layer_costs(model, settings(case, fork))
    state = costs.state or [0] * len(costs.kv)
    kv = [k - s for k, s in zip(costs.kv, state)]
    return sum(kv), sum(state), sum(1 for k in kv if k)


def _built(bed) -> Oracle | None:
    for name in ("rig1", "rig2"):
        try:
            return Oracle(bed.rigs[name].root)
        except OracleError:
            continue
    return None


@pytest.fixture(scope="module")
def oracle(bed):
    found = _built(bed)
    if found is None:  # run alone, or an earlier test took the build trees away: the deploy builds one
        run = bed.pyinfra("-y")
        assert run.returncode == 0, run.stderr[-3000:]
        found = _built(bed)
    assert found is not None, "no rig kept its llama.cpp build tree after a deploy"
    found.compile()
    return found


@pytest.fixture(scope="module")
def files(oracle):
    """name -> the planner's reading of the completed header-only file."""
    out = {}
    for name, (meta, seed) in HEADERS.items():
        oracle.complete(f"{name}.gguf", meta, seed)
        out[name] = read_model(str(oracle.host_path(f"{name}.gguf")))
    return out


def test_every_family_the_planner_sizes_is_checked_here():
    sized = set(architectures.RECURRENT_SIZED["llama.cpp"]) | {"gpt-oss", "gemma2", "gemma3", "cohere2", "llama4",
                                                                 "deepseek2", "glm4moe", "qwen3moe"}
    assert sized <= set(HEADERS), sorted(sized - set(HEADERS))


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_the_planner_sizes_the_kv_cache_and_recurrent_state_as_llama_cpp_does(oracle, files, name):
    model = files[name]
    assert model.arch == HEADERS[name][0]["general.architecture"]
    for case in CASES:
        kv, state, layers = planned(model, case)
        got = oracle.sizing(f"{name}.gguf", case)
        where = f"{name} {case}"
        # llama.cpp logs each cache's MiB with two decimals; the breakdown (where the graph could be
        # reserved) is exact
        assert abs(kv / MiB - got.kv_mib) <= 0.005 * max(1, got.kv_caches) + 1e-6, (where, kv / MiB, got.kv_mib)
        assert abs(state / MiB - got.state_mib) <= 0.005 + 1e-6, (where, state / MiB, got.state_mib)
        assert layers == got.kv_layers, (where, layers, got.kv_layers)
        if got.context_bytes is not None:
            assert abs(kv + state - got.context_bytes) <= MiB, (where, kv + state, got.context_bytes)


# llama-fit-params reserves the compute graphs too, which the stand-in tensors of Falcon-H1, Granite
# hybrid, Nemotron-H and the delta-net families do not survive (their memory is sized before, and checked above)
FIT_PARAMS = ["cohere2", "deepseek2", "gemma2", "gemma3", "glm4moe", "gpt-oss", "jamba", "lfm2", "lfm2moe", "llama4",
              "mamba", "mamba2", "plamo2", "qwen3moe"]


# llama-fit-params has no --kv-unified: its -np N is N caches
FIT_CASES = [Case(ctx=32768, seqs=1, cache_k="q8_0", cache_v="q8_0"), Case(ctx=8192, seqs=4),
             Case(ctx=8192, seqs=2, swa_full=True, ubatch=1024)]


@pytest.mark.parametrize("name", FIT_PARAMS)
def test_llama_fit_params_prints_the_context_the_planner_books(oracle, files, name):
    for case in FIT_CASES:
        kv, state, _ = planned(files[name], case)
        printed = oracle.fit_params_context_mib(f"{name}.gguf", case)   # whole MiB, rounded down
        assert printed == (kv + state) // MiB, (name, case, printed, (kv + state) / MiB)


def test_a_planner_error_would_be_seen(oracle, files):
    """The comparison can fail: sized at another slot count than llama.cpp runs, the figures differ."""
    case = CASES[3]
    kv, state, _ = planned(files["qwen3next"], Case(ctx=case.ctx, seqs=1))
    got = oracle.sizing("qwen3next.gguf", case)
    assert abs(state / MiB - got.state_mib) > 1


def test_the_loader_names_what_a_header_lacks(oracle):
    meta, _ = HEADERS["qwen35moe"]
    meta = {k: v for k, v in meta.items() if k != "qwen35moe.rope.dimension_sections"}
    with pytest.raises(OracleError, match="key not found in model: qwen35moe.rope.dimension_sections"):
        oracle.complete("broken.gguf", meta)


@pytest.fixture(scope="module")
def ik_oracle(bed):
    if "rigik" not in bed.rigs:
        pytest.skip("the ik_llama.cpp rig is made by tests/e2e/test_ik.py, which runs before this file")
    found = Oracle(bed.rigs["rigik"].root, "ik_llama.cpp")
    found.compile()
    return found


def _ik_loads(name: str) -> bool:
    return architectures.kind("ik_llama.cpp", HEADERS[name][0]["general.architecture"]) is not None


@pytest.mark.parametrize("name", sorted(n for n in HEADERS if _ik_loads(n)))
def test_the_planner_sizes_ik_llama_cpp_s_cache_as_ik_llama_cpp_does(ik_oracle, name):
    meta, seed = HEADERS[name]
    ik_oracle.complete(f"ik-{name}.gguf", meta, seed)
    model = read_model(str(ik_oracle.host_path(f"ik-{name}.gguf")))
    arch = meta["general.architecture"]
    if architectures.kind("ik_llama.cpp", arch) != "attention" and arch not in architectures.RECURRENT_SIZED["ik_llama.cpp"]:
        with pytest.raises(ArchitectureError, match=arch):   # loaded by ik, not sized: refused, never guessed
            planned(model, IK_CASES[0], "ik_llama.cpp")
        return
    for case in IK_CASES:
        kv, state, _ = planned(model, case, "ik_llama.cpp")
        got = ik_oracle.sizing(f"ik-{name}.gguf", case)
        where = f"ik_llama.cpp {name} {case}"
        assert abs(kv / MiB - got.kv_mib) <= 0.005 + 1e-6, (where, kv / MiB, got.kv_mib)
        # the state is the cache buffer less K and V: two rounded figures
        assert abs(state / MiB - got.state_mib) <= 0.01 + 1e-6, (where, state / MiB, got.state_mib)
