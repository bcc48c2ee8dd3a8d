"""The placement planner on synthetic GGUFs (header-only sparse files) and the real gemma3 270M file.

The key check (`_replay`) is written here, apart from llamarig: it applies the plan's flags to the
model's tensor names with llama.cpp's rules (layer split by -ngl/-ts, then the first -ot pattern
found anywhere in the name wins) and must give exactly the per-device weights of the plan's table.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from llamarig.planner import memory
from llamarig.planner.gguf import read_model
from llamarig.planner.memory import GiB, Settings
from llamarig.planner.placement import Flags
from llamarig.planner.plan import evaluate, plan
from testbed import synth
from testbed.sources import ensure_gemma_gguf


def _replay(model, p):
    """Per-device weights from the flags alone (llama.cpp's rules; ik's layer map taken from the plan)."""
    n = model.n_layer
    f = p.flags
    if p.fork == "ik_llama.cpp":
        layers = p.layers
    else:
        ngl = n + 1 if f.n_gpu_layers is None or f.n_gpu_layers < 0 else min(f.n_gpu_layers, n + 1)
        ts = f.tensor_split or [1.0] * f.n_devices
        cum = [sum(ts[:i + 1]) / sum(ts) for i in range(len(ts))]
        start = n + 1 - ngl
        layers = []
        for il in range(n + 1):
            if il < start:
                layers.append("CPU")
            else:
                x = (il - start) / ngl
                layers.append(f"CUDA{min(next(i for i, c in enumerate(cum + [2]) if c > x), len(ts) - 1)}")
        assert layers == p.layers
    out = {}
    first_nextn = n - model.n_nextn
    for t in model.tensors:
        if t.layer is not None and t.layer >= first_nextn:
            continue  # next-token layers: never allocated
        dev = next((d for pat, d in f.overrides if re.search(pat, t.name)), None)
        if dev is None:
            m = re.match(r"blk\.(\d+)\.", t.name)
            dev = layers[int(m.group(1))] if m else ("CPU" if t.name.startswith("token_embd") else layers[n])
        out[dev] = out.get(dev, 0) + t.nbytes
    if "output.weight" not in {t.name for t in model.tensors} and layers[n] != "CPU":
        emb = next(t for t in model.tensors if t.name == "token_embd.weight")
        out[layers[n]] = out.get(layers[n], 0) + emb.nbytes  # tied output: a copy on the output device
    return out


def _check(model, p, s):
    weights = _replay(model, p)
    for row in p.devices:
        assert weights.get(row.name, 0) == row.weights, row.name
        assert row.total == row.weights + row.kv + row.compute + row.runtime and row.runtime == memory.runtime(model, s)
        if p.fits:
            assert row.total <= row.budget
    assert weights.get("CPU", 0) == p.host["weights"]
    assert sum(weights.values()) == sum(r.weights for r in p.devices) + p.host["weights"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    make = {
        "dense": (synth.dense_llama(n_layer=24, n_embd=2048, n_ff=5632, n_vocab=32000), 1),
        "moe": (synth.qwen3moe(), 2),
        "glm47": (synth.glm47_iq1m(), 3),
        "glm52": (synth.glm52_like(), 5),
        "ik": (synth.qwen3moe(types={"default": "Q8_0", "ffn_gate_exps": "IQ2_KS", "ffn_up_exps": "IQ2_KS",
                                     "ffn_down_exps": "IQ4_KS", "token_embd": "Q6_0"}), 2),
    }
    out = {}
    for name, (shape, parts) in make.items():
        files = synth.write_model(str(d / f"{name}.gguf"), shape, parts=parts)
        out[name] = read_model(files[-1])
    out["gemma"] = read_model(str(ensure_gemma_gguf()))
    return out


CASES = [
    ("dense", [24], 64, 8192, "f16", "llama.cpp"),
    ("dense", [8, 8], 64, 32768, "q8_0", "llama.cpp"),
    ("dense", [4], 64, 32768, "f16", "llama.cpp"),         # does not fit whole: first layers on the CPU
    ("moe", [24], 64, 32768, "q8_0", "llama.cpp"),           # 32 GB MoE on one card: experts to RAM
    ("moe", [24, 24], 64, 65536, "f16", "llama.cpp"),
    ("moe", [24, 12], 64, 65536, "q8_0", "ik_llama.cpp"),
    ("glm47", [24] * 6, 128, 131072, "q8_0", "llama.cpp"),
    ("glm47", [24] * 6, 128, 184320, "q8_0", "llama.cpp"),
    ("glm47", [24] * 4, 128, 131072, "q8_0", "llama.cpp"),
    ("glm47", [24, 24], 128, 32768, "q8_0", "ik_llama.cpp"),
    ("glm52", [24] * 4, 256, 65536, "q8_0", "llama.cpp"),
    ("glm52", [24] * 4, 256, 131072, "f16", "ik_llama.cpp"),
    ("ik", [16, 16], 64, 32768, "q8_KV", "ik_llama.cpp"),
    ("gemma", [8], 16, 32768, "f16", "llama.cpp"),
    ("gemma", [8, 8], 16, 8192, "q8_0", "ik_llama.cpp"),
]


@pytest.mark.parametrize("name, gpus, ram, ctx, cache, fork", CASES)
def test_flags_mean_what_the_table_says(models, name, gpus, ram, ctx, cache, fork):
    model = models[name]
    s = Settings(fork=fork, ctx=ctx, cache_k=cache, cache_v=cache if cache != "q8_KV" else "q8_0")
    p = plan(model, [g * GiB for g in gpus], ram * GiB, s)
    _check(model, p, s)
    # and the same flags, evaluated as a hand-written placement, give the same table
    again = evaluate(model, p.flags, [g * GiB for g in gpus], ram * GiB, s)
    assert [(r.weights, r.kv, r.compute) for r in again.devices] == [(r.weights, r.kv, r.compute) for r in p.devices]


def test_attention_stays_on_gpu_and_experts_go_whole(models):
    model = models["glm47"]
    p = plan(model, [24 * GiB] * 4, 128 * GiB, Settings(ctx=131072, cache_k="q8_0", cache_v="q8_0"))
    assert p.fits and all(d != "CPU" for d in p.layers)           # every layer's attention and KV on a GPU
    assert p.flags.overrides[-1] == (r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", "CPU")  # catch-all last
    assert all(d.startswith("CUDA") for _, d in p.flags.overrides[:-1])
    by_layer = {}
    for t in model.tensors:
        if memory.is_expert(t.name) and t.layer < model.n_layer - model.n_nextn:
            dev = next(d for pat, d in p.flags.overrides if re.search(pat, t.name))
            by_layer.setdefault(t.layer, set()).add(dev)
    assert all(len(devs) == 1 for devs in by_layer.values())       # a layer's experts are never split
    assert any(devs == {"CPU"} for devs in by_layer.values())       # 101 GB on 96 GB: some go to RAM
    assert p.host["weights"] > 0


def test_seed_glm47_six_3090s(models):
    """The blog: 128K q8_0 fits with -ts 1,1,1,1,1,1 (about 20 GB to spare); 180K q8_0 runs out on a card."""
    model = models["glm47"]
    gpus = [24 * GiB] * 6
    seed = Flags(6, 999, [1] * 6)
    ok = evaluate(model, seed, gpus, None, Settings(ctx=131072, cache_k="q8_0", cache_v="q8_0"))
    assert ok.fits
    spare = sum(r.budget - r.total for r in ok.devices) + 6 * memory.DEFAULT_MARGIN
    assert 15 * GiB < spare < 25 * GiB
    oom = evaluate(model, seed, gpus, None, Settings(ctx=184320, cache_k="q8_0", cache_v="q8_0"))
    assert not oom.fits
    failing = [r.name for r in oom.devices if r.total > r.budget]
    assert failing and all(name in oom.reason for name in failing)
    assert "CUDA5" not in failing  # the last card holds fewer layers (the output layer counts as one)


def test_kv_cache_formulas(models):
    glm = models["glm47"]
    s = Settings(ctx=131072, cache_k="q8_0", cache_v="q8_0")
    # 8 KV heads of 128, q8_0 (34 bytes per 32): K and V 1088 bytes each per cell
    assert memory.kv_layer(glm, 10, s) == 2 * 1088 * 131072
    assert memory.kv_layer(glm, 92, s) == 0                       # the next-token layer has no cache
    mla = models["glm52"]
    s = Settings(ctx=65536, cache_k="f16", cache_v="f16")
    assert memory.kv_layer(mla, 5, s) == 576 * 2 * 65536         # kv_lora 512 + rope 64, no V cache
    ik = Settings(fork="ik_llama.cpp", ctx=65536, cache_k="q8_0", cache_v="q8_0", mla=3)
    assert memory.kv_layer(mla, 5, ik) == 576 // 32 * 34 * 65536
    ik0 = Settings(fork="ik_llama.cpp", ctx=65536, cache_k="f16", cache_v="f16", mla=0)
    # plain attention on 64 heads of key_length_mla (192 + 64) and value_length_mla (256)
    assert memory.kv_layer(mla, 5, ik0) == (256 + 256) * 64 * 2 * 65536
    gemma = models["gemma"]
    s = Settings(ctx=32768, parallel=1)
    # sliding-window layers: pad256(min(cells, 512 + 512)); layer 5 is full attention
    assert memory.kv_layer(gemma, 0, s) == 2 * 256 * 2 * 1024
    assert memory.kv_layer(gemma, 5, s) == 2 * 256 * 2 * 32768
    # q8_KV (ik only): 8 bytes of metadata per head and cell on K
    qk = Settings(fork="ik_llama.cpp", ctx=4096, cache_k="q8_KV", cache_v="q8_0")
    moe = models["ik"]
    assert memory.kv_layer(moe, 0, qk) == (4 * (128 + 8) + 4 * 128 // 32 * 34) * 4096
    # parallel slots without a unified cache: pad256(ctx / n) cells per slot
    assert memory.cells(glm, Settings(ctx=10000, parallel=3)) == (3584, 3)


def test_nothing_fits_is_a_clear_refusal(models):
    p = plan(models["glm47"], [8 * GiB, 8 * GiB], 64 * GiB, Settings(ctx=202752, cache_k="f16", cache_v="f16"))
    assert not p.fits
    assert "do not fit" in p.reason or "needs" in p.reason


def test_ram_too_small_is_named(models):
    p = plan(models["glm47"], [24 * GiB] * 2, 32 * GiB, Settings(ctx=32768, cache_k="q8_0", cache_v="q8_0"))
    assert not p.fits and "host RAM" in p.reason


def test_ik_split_puts_the_planned_layers(models):
    """ik_llama.cpp splits by memory: the -ts the planner writes must give the layer ranges it planned."""
    model = models["glm47"]
    s = Settings(fork="ik_llama.cpp", ctx=65536, cache_k="q8_0", cache_v="q8_0")
    p = plan(model, [24 * GiB, 24 * GiB, 16 * GiB], 128 * GiB, s)
    counts = [sum(1 for d in p.layers[:-1] if d == f"CUDA{i}") for i in range(3)]
    assert all(counts) and counts[2] < counts[0]
    _check(model, p, s)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "llamarig", "plan", *args], capture_output=True, text=True)


def test_cli_json_and_exit_status(models, tmp_path):
    path = models["glm47"].files[0]
    r = _cli(path, "--gpus", "24,24,24,24,24,24", "--ram", "128", "--ctx", "131072", "--cache-type", "Q8_0", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc) == {"fits", "reason", "devices", "host", "args"} and doc["fits"] is True
    assert [set(d) for d in doc["devices"]] == [{"name", "budget", "weights", "kv", "compute", "runtime", "total"}] * 6
    assert set(doc["host"]) == {"weights", "total"}
    assert "--tensor-split" in doc["args"] and "--ctx-size" in doc["args"]
    r = _cli(path, "--gpus", "8,8", "--ram", "32", "--ctx", "202752")
    assert r.returncode == 1 and "does not fit" in r.stdout
    r = _cli(path, "--gpus", "24,x")
    assert r.returncode == 2 and "GiB per GPU" in r.stderr and "Traceback" not in r.stderr
    r = _cli(str(tmp_path / "none.gguf"), "--gpus", "24")
    assert r.returncode == 2 and "No such file" in r.stderr



def test_cli_a_ubatch_over_the_batch_brings_its_batch_or_is_planned_as_the_server_clamps_it(models):
    path = models["moe"].files[0]

    def planned(*extra):
        r = _cli(path, "--gpus", "24", "--ram", "100", "--ctx", "32768", "--json", *extra)
        doc = json.loads(r.stdout)
        args = doc["args"]
        return doc["devices"][0]["compute"], {f: args[args.index(f) + 1] for f in ("--ubatch-size", "--batch-size")
                                              if f in args}

    big, big_args = planned("--ubatch", "4096")
    assert big_args == {"--ubatch-size": "4096", "--batch-size": "4096"}   # else the server runs a 2048 ubatch
    clamped, clamped_args = planned("--ubatch", "4096", "--batch", "2048")
    assert clamped_args == {"--ubatch-size": "4096", "--batch-size": "2048"}
    same, _ = planned("--ubatch", "2048")
    assert clamped == same < big   # planned for the 2048 ubatch the server runs

def test_no_kv_offload_books_the_cache_in_host_ram(models):
    """--no-kv-offload keeps every layer's KV cache in RAM: the GPUs' rows carry none of it, the host all."""
    model = models["glm47"]
    on = Settings(ctx=65536, cache_k="q8_0", cache_v="q8_0")
    off = Settings(ctx=65536, cache_k="q8_0", cache_v="q8_0", kv_offload=False)
    p_on = plan(model, [24 * GiB] * 6, 256 * GiB, on)
    flags = p_on.flags
    a, b = evaluate(model, flags, [24 * GiB] * 6, 256 * GiB, on), evaluate(model, flags, [24 * GiB] * 6, 256 * GiB, off)
    kv = sum(memory.layer_costs(model, on).kv)
    assert sum(r.kv for r in a.devices) == kv > 0 and sum(r.kv for r in b.devices) == 0
    assert b.host["total"] - a.host["total"] == kv
    assert [r.weights for r in a.devices] == [r.weights for r in b.devices]
