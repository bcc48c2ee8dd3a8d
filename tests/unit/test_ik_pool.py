"""ik_llama.cpp's CUDA pool as the plan counts it (llamarig/planner/memory.py ik_pool; the figures come from
ik's source, docs/memory-model.md, and are held to measured servers in test_measured_buffers.py)."""

from __future__ import annotations

import pytest

from llamarig.planner import memory
from llamarig.planner.gguf import read_model
from llamarig.planner.memory import GiB, MiB, Settings
from llamarig.planner.plan import plan
from testbed import synth


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    return {name: read_model(synth.write_model(str(d / f"{name}.gguf"), shape)[0])
            for name, shape in {"moe": synth.qwen3moe(), "dense": synth.dense_llama(n_head=32, head_dim=128),
                                "mla": synth.glm52_like(n_layer=6)}.items()}


def ik(**kw) -> Settings:
    return Settings(fork="ik_llama.cpp", ctx=32768, **kw)


def test_mainline_holds_no_pool_beyond_its_runtime(shapes):
    for model in shapes.values():
        assert memory.ik_pool(model, Settings(ctx=32768, ubatch=4096)) == 0
        assert memory.runtime(model, Settings(ctx=32768, ubatch=4096)) == memory.RUNTIME


def test_the_fused_moe_scratch_grows_with_the_ubatch(shapes):
    moe = shapes["moe"]
    sizes = [memory.ik_pool(moe, ik(ubatch=u)) for u in (512, 1024, 2048, 4096)]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0] + 150 * MiB
    assert all(x % memory.POOL_GRANULE == 0 for x in sizes)
    # 66 MiB at ubatch 512 (flash attention's meta), 274 at 4096 (the MoE up/gate): ik's source, per token
    assert 64 * MiB <= sizes[0] <= 70 * MiB and 270 * MiB <= sizes[-1] <= 278 * MiB


def test_flash_attention_meta_stops_growing_at_2048_tokens_and_goes_with_flash_attention(shapes):
    dense = shapes["dense"]
    at = {u: memory.ik_pool(dense, ik(ubatch=u)) for u in (512, 2048, 4096)}
    assert at[512] < at[2048] == at[4096]
    assert memory.ik_pool(dense, ik(ubatch=4096, flash_attn=False)) == 0


def test_a_quantized_cache_adds_one_layers_f16_copy_over_the_context(shapes):
    dense = shapes["dense"]
    f16, q8 = (memory.ik_pool(dense, ik(ubatch=512, cache_k=c, cache_v=c)) for c in ("f16", "q8_0"))
    per_cell = 2 * max(dense.n_head_kv) * (dense.head_dim_k + dense.head_dim_v)
    assert abs(q8 - f16 - per_cell * 32768) <= memory.POOL_GRANULE
    longer = memory.ik_pool(dense, Settings(fork="ik_llama.cpp", ctx=131072, ubatch=512, cache_k="q8_0",
                                            cache_v="q8_0"))
    assert longer > q8


def test_mla_attention_is_not_sized_by_the_mma_meta(shapes):
    mla = shapes["mla"]
    pool = memory.ik_pool(mla, ik(ubatch=2048))
    assert pool == memory.ik_pool(mla, ik(ubatch=2048, flash_attn=False)) > 0   # the MoE scratch alone


def test_every_gpu_of_an_ik_plan_keeps_the_pool_free(shapes):
    moe = shapes["moe"]
    s = ik(ubatch=4096)
    p = plan(moe, [24 * GiB, 24 * GiB], 128 * GiB, s)
    assert p.fits and p.devices
    for row in p.devices:
        assert row.runtime == memory.RUNTIME + memory.ik_pool(moe, s)
        assert row.total <= row.budget
