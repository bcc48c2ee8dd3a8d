"""The planner knows which architectures each fork loads and sizes the ones it plans as llama.cpp allocates
them: hybrids keep a KV cache only on their attention layers and a recurrent state per slot, sliding-window
layers keep the window, and an architecture the fork does not load (or whose state is not sized) is refused.

The figures are llama.cpp's own for these shapes (its loaders in src/models/*.cpp, llama-hparams.cpp's
n_embd_r/n_embd_s, llama-memory-recurrent.cpp), worked out by hand from the header values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llamarig.planner import architectures, memory
from llamarig.planner.architectures import ArchitectureError
from llamarig.planner.gguf import read_model
from llamarig.planner.memory import MiB, Settings
from llamarig.planner.plan import plan
from testbed import synth


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("arch")
    out = {}
    for name, shape in {"qwen3next": synth.qwen3next(), "qwen35moe": synth.qwen35moe(),
                        "gpt-oss": synth.gpt_oss_120b(),
                        "unknown": synth.dense_llama(arch="llama-from-the-future"),
                        "rwkv7": synth.dense_llama(arch="rwkv7"),
                        "mamba": synth.dense_llama(arch="mamba")}.items():
        out[name] = read_model(synth.write_model(str(d / f"{name}.gguf"), shape)[-1])
    return out


def split(model, s):
    c = memory.layer_costs(model, s)
    state = sum(c.state)
    return sum(c.kv) - state, state


def test_qwen3next_keeps_kv_on_its_12_attention_layers_and_a_state_per_slot(models):
    m = models["qwen3next"]
    assert [il for il, r in enumerate(memory.recurrent_layers(m)) if not r] == list(range(3, 48, 4))
    kv, state = split(m, Settings(ctx=131072, cache_k="f16", cache_v="f16"))
    assert kv == 3072 * MiB                                    # 12 layers, not 48
    assert memory.recurrent_row_floats(m) == (3 * (4096 + 2 * 16 * 128), 128 * 4096)
    assert state == 36 * 4 * (24576 + 524288) * 4              # 36 layers, 4 automatic slots, F32: 301.5 MiB
    kv, state = split(m, Settings(ctx=4096, parallel=4, cache_k="q8_0", cache_v="q8_0"))
    assert kv + state == pytest.approx(352.5 * MiB, abs=MiB)   # the state is most of a small context
    _, one = split(m, Settings(ctx=4096, parallel=1))
    assert one == state // 4                                   # about 75 MiB a slot


def test_qwen35moe_on_one_card(models):
    kv, state = split(models["qwen35moe"], Settings(ctx=131072, cache_k="q8_0", cache_v="q8_0"))
    assert kv == 1360 * MiB and state == pytest.approx(251.25 * MiB)


def test_gpt_oss_slides_every_other_layer(models):
    m = models["gpt-oss"]
    assert m.swa_layers == [il % 2 == 0 for il in range(36)]  # load_swa_pattern(ml, 2)
    c = memory.layer_costs(m, Settings(ctx=131072))
    full = sum(c.kv[il] for il in range(36) if not m.swa_layers[il])
    window = sum(c.kv[il] for il in range(36) if m.swa_layers[il])
    assert full == 4608 * MiB and window == 36 * MiB and sum(c.state) == 0
    swa_full = memory.layer_costs(m, Settings(ctx=131072, swa_full=True))
    assert sum(swa_full.kv) == 9216 * MiB


def test_the_recurrent_state_goes_with_its_layer(models):
    m = models["qwen3next"]
    s = Settings(ctx=32768, cache_k="q8_0", cache_v="q8_0")
    p = plan(m, [24 << 30], 256 << 30, s)
    assert p.fits
    c = memory.layer_costs(m, s)
    assert p.devices[0].kv == sum(c.kv)  # every layer's KV and state on the card (all layers offloaded)


def test_an_architecture_the_fork_does_not_load_is_refused_by_name(models):
    with pytest.raises(ArchitectureError, match=r"the model's architecture 'llama-from-the-future' is not one "
                                                r"llama\.cpp \(.*\) loads"):
        memory.layer_costs(models["unknown"], Settings())
    with pytest.raises(ArchitectureError, match="is not one ik_llama.cpp"):
        plan(models["unknown"], [24 << 30], None, Settings(fork="ik_llama.cpp"))


def test_a_state_the_planner_does_not_size_is_refused_not_guessed(models):
    with pytest.raises(ArchitectureError, match=r"'rwkv7' is recurrent in llama\.cpp .*does not size its recurrent"):
        memory.layer_costs(models["rwkv7"], Settings())
    with pytest.raises(ArchitectureError, match=r"'mamba' is recurrent in ik_llama\.cpp"):
        memory.layer_costs(models["mamba"], Settings(fork="ik_llama.cpp"))


def test_ik_llama_cpp_keeps_qwen3next_s_state_in_its_cache_for_one_slot_unless_told(models):
    """ik_llama.cpp's llama_kv_cache_init: K and V on the 12 attention layers, a delta-net state per
    recurrent layer and slot (conv + head_v_dim^2 per value head, F32), its server's one slot by default."""
    m = models["qwen3next"]
    kv, state = split(m, Settings(fork="ik_llama.cpp", ctx=131072, cache_k="f16", cache_v="f16"))
    assert kv == 3072 * MiB
    assert memory.ik_state_floats(m) == 3 * (2 * 128 * 16 + 4096) + 128 * 128 * 32
    assert state == 36 * (24576 + 524288) * 4                  # one slot: about 75 MiB
    _, four = split(m, Settings(fork="ik_llama.cpp", ctx=131072, parallel=4))
    assert four == 4 * state


def test_the_lists_are_the_forks_own():
    data = json.loads(architectures.DATA.read_text())
    main, ik = data["llama.cpp"]["architectures"], data["ik_llama.cpp"]["architectures"]
    assert main["qwen3next"] == "hybrid" and main["mamba2"] == "recurrent" and main["gpt-oss"] == "attention"
    assert ik["qwen3next"] == "hybrid" and "gpt-oss" in ik and "mamba2" not in ik
    assert architectures.swa_pattern("gemma3") == (6, False) and architectures.swa_pattern("cohere2moe") == (4, True)
    assert architectures.swa_pattern("llama") == (0, False)
    assert "llama-from-the-future" not in main


def test_host_ram_counts_the_prompt_cache_and_the_checkpoints_a_server_keeps(models):
    from llamarig.planner.placement import Flags
    from llamarig.planner.plan import evaluate
    m = models["qwen3next"]
    s = Settings(ctx=32768, parallel=1, cache_k="q8_0", cache_v="q8_0")
    c = memory.layer_costs(m, s)
    assert memory.host_caches(m, s, c) == 8192 * MiB + 32 * sum(c.state)   # 32 checkpoints of 75.4 MiB
    bounded = Settings(ctx=32768, parallel=1, cache_k="q8_0", cache_v="q8_0", cache_ram_mib=0, ctx_checkpoints=0)
    assert memory.host_caches(m, bounded, memory.layer_costs(m, bounded)) == 0
    # gpt-oss: a checkpoint holds one sequence's sliding window (128 + 512 cells of 2048 B, 18 layers)
    g, gs = models["gpt-oss"], Settings(ctx=131072, parallel=1)
    assert memory.host_caches(g, gs, memory.layer_costs(g, gs)) == 8192 * MiB + 32 * 18 * 2048 * (128 + 512)
    # ik_llama.cpp checkpoints only models with a recurrent state (its server-context.cpp), 32 a slot
    ik = Settings(fork="ik_llama.cpp", ctx=32768, parallel=2)
    assert memory.host_caches(m, ik, memory.layer_costs(m, ik)) == 8192 * MiB + 32 * sum(
        memory.layer_costs(m, ik).state)
    ikg = Settings(fork="ik_llama.cpp", ctx=131072, parallel=1)
    assert memory.host_caches(g, ikg, memory.layer_costs(g, ikg)) == 8192 * MiB
    # in a plan's host column: everything on the CPU, so the caches come on top of weights and KV
    whole = evaluate(m, Flags(1, 0, None, []), [24 << 30], 512 << 30, s)
    assert whole.host["total"] >= whole.host["weights"] + sum(c.kv) + memory.host_caches(m, s, c)


def test_the_bounds_are_read_from_extra_args():
    from llamarig.hostdata.validate import validate_host
    from llamarig.release.placements import settings
    from .helpers import rig
    svc = {"name": "chat", "model": "gemma", "port": 8080, "extra_args": ["-cram", "2048", "--ctx-checkpoints=4"]}
    doc, problems = validate_host("r1", rig(services=[svc]))
    assert problems == []
    s = settings(doc, doc["services"][0])
    assert (s.cache_ram_mib, s.ctx_checkpoints) == (2048, 4)
    doc, _ = validate_host("r1", rig())
    s = settings(doc, doc["services"][0])
    assert (s.cache_ram_mib, s.ctx_checkpoints) == (8192, 32)


def test_mamba1_layers_have_no_groups_whatever_the_file_says(tmp_path):
    """jamba's and mamba's loaders never read ssm.group_count (found by llama.cpp as the oracle,
    tests/e2e/test_kv_oracle.py): the conv state is (d_conv - 1) * d_inner, not widened by groups."""
    from testbed.arch_headers import HEADERS
    meta, _ = HEADERS["jamba"]
    assert meta["jamba.ssm.group_count"] == 2
    path = tmp_path / "jamba.gguf"
    synth.write_gguf(str(path), meta, [("token_embd.weight", (512, 4096), "F32")])
    model = read_model(str(path))
    assert memory.recurrent_row_floats(model) == (3 * 1024, 64 * 1024)
    meta2 = {k.replace("jamba", "mamba2"): v for k, v in meta.items() if k.startswith("jamba.")} | {
        k: v for k, v in meta.items() if not k.startswith("jamba.")} | {"general.architecture": "mamba2"}
    synth.write_gguf(str(path), meta2, [("token_embd.weight", (512, 4096), "F32")])
    assert memory.recurrent_row_floats(read_model(str(path))) == (3 * (1024 + 2 * 2 * 64), 64 * 1024)


@pytest.mark.parametrize("arch", sorted(architectures.ATTENTION_UNSIZED))
def test_a_cache_layout_the_planner_does_not_have_is_refused_by_name(tmp_path, arch):
    model = read_model(synth.write_model(str(tmp_path / "m.gguf"), synth.dense_llama(arch=arch))[-1])
    if architectures.kind("llama.cpp", arch) is None:
        pytest.skip(f"{arch} is not in the pinned llama.cpp")
    with pytest.raises(ArchitectureError, match=rf"{re.escape(arch)}.*placement: manual"):
        memory.layer_costs(model, Settings())


def test_lfm2_slides_every_attention_layer_when_the_file_gives_a_window(tmp_path):
    from testbed.arch_headers import HEADERS
    meta, _ = HEADERS["lfm2-swa"]
    path = tmp_path / "lfm2.gguf"
    synth.write_gguf(str(path), meta, [("token_embd.weight", (512, 4096), "F32")])
    model = read_model(str(path))
    assert model.swa_layers == [False, False, True, False, False, True]
