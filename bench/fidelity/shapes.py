"""The fidelity models' full tensor lists, asked of llama.cpp's own loader (run here, on a container rig).

    python bench/fidelity/shapes.py RIG_ROOT OUT_DIR

``testbed/synth.py`` writes standard-attention tensors only, which a hybrid or gpt-oss loader does not take.
For each model below, this takes its real hyperparameters (the header the converter writes), shrinks the
layer count to one period of its layer pattern (same widths), lets ``testbed.oracle.Oracle.complete`` add
every tensor the pinned llama.cpp's loader asks for, with the shape it expects, then repeats each layer's
tensors over the real layer count by the layer's place in the pattern. The types are a quant's: expert
matrices as the model's file has them, other matrices Q8_0 where their rows allow it, vectors and
convolutions and biases F32. OUT_DIR/NAME.json is {"meta": header, "tensors": [[name, shape, type], ...]};
``write_model.py`` writes the GGUF from it on the GPU machine (data a sparse hole), where no llama.cpp
has been built for the CPU.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

from testbed import synth  # noqa: E402
from testbed.oracle import Case, Oracle  # noqa: E402

LAYER = re.compile(r"^blk\.(\d+)\.(.*)$")


def qwen35moe_header() -> tuple[dict, int, int, tuple[str, ...]]:
    """Qwen3.5-35B-A3B: 40 layers (3 gated delta-net, 1 full attention), 256 experts of 512, 8 used, 1 shared."""
    s = synth.qwen35moe()
    meta = synth.metadata(s) | {
        "qwen35moe.rope.dimension_count": 64, "qwen35moe.rope.dimension_sections": [11, 11, 10, 0],
        "qwen35moe.expert_shared_feed_forward_length": 512}
    seed = tuple(f"blk.{il}.{t}.weight" for il in range(3) for t in ("attn_qkv", "attn_gate"))
    return meta | synth.tokenizer_meta(s.n_vocab, pre="qwen2"), s.n_layer, 4, seed


def gpt_oss_20b_header() -> tuple[dict, int, int, tuple[str, ...]]:
    """gpt-oss-20b: 24 layers alternating 128-token sliding window and full attention, 32 experts of 2880, 4 used."""
    s = synth.gpt_oss_120b(n_layer=24, n_expert=32)
    meta = synth.metadata(s)
    return meta | synth.tokenizer_meta(s.n_vocab), s.n_layer, 2, ()


MODELS = {"qwen35moe": (qwen35moe_header, "Q8_0"), "gpt-oss-20b": (gpt_oss_20b_header, "MXFP4")}


def type_of(name: str, shape: tuple[int, ...], expert_type: str) -> str:
    if len(shape) < 2 or "conv1d" in name or name.endswith((".bias", "ssm_a", "attn_sinks.weight")):
        return "F32"
    if "_exps." in name and shape[0] % 32 == 0:
        return expert_type if shape[0] % (256 if expert_type.endswith("_K") else 32) == 0 else "Q8_0"
    if "ffn_gate_inp" in name:
        return "F32"  # routers are F32 in the converters' files
    return "Q8_0" if shape[0] % 32 == 0 else "F32"


def full_tensors(rows: list, period: int, n_layer: int, expert_type: str) -> list:
    """Every layer of the real model from one period's (layer il is like layer il % period)."""
    per_layer: dict[int, list] = {}
    top, tail = [], []
    for name, shape, _t in rows:
        m = LAYER.match(name)
        if m:
            per_layer.setdefault(int(m.group(1)), []).append((m.group(2), shape))
        elif name.startswith("token_embd"):
            top.append((name, shape))
        else:
            tail.append((name, shape))
    out = [(n, list(s), type_of(n, s, expert_type)) for n, s in top]
    for il in range(n_layer):
        for rest, shape in sorted(per_layer[il % period]):
            name = f"blk.{il}.{rest}"
            out.append((name, list(shape), type_of(name, shape, expert_type)))
    out += [(n, list(s), type_of(n, s, expert_type)) for n, s in tail]
    return out


def main(argv: list[str]) -> int:
    root, out_dir = Path(argv[0]), Path(argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    oracle = Oracle(root)
    oracle.compile()
    for name, (make, expert_type) in MODELS.items():
        meta, n_layer, period, seed = make()
        arch = meta["general.architecture"]
        small = dict(meta, **{f"{arch}.block_count": period})
        rows = oracle.complete(f"fid-{name}.gguf", small, seed=seed, case=Case(ctx=4096))
        tensors = full_tensors(rows, period, n_layer, expert_type)
        # the full file must load too (its loader, its sizes): written header-only and run once
        synth.write_gguf(str(oracle.host_path(f"fid-{name}-full.gguf")), meta, [(n, tuple(s), t) for n, s, t in tensors])
        sized = oracle.sizing(f"fid-{name}-full.gguf", Case(ctx=32768))
        size = sum(synth_nbytes(s, t) for _n, s, t in tensors)
        print(f"{name}: {len(tensors)} tensors, {size / 2**30:.2f} GiB; llama.cpp at 32K: KV {sized.kv_mib} MiB "
              f"({sized.kv_layers} layers), recurrent state {sized.state_mib} MiB", flush=True)
        # the vocabulary is written again by write_model.py (synth.tokenizer_meta), not kept in the spec
        header = {k: v for k, v in meta.items() if not k.startswith("tokenizer.")}
        tokenizer = {"n_vocab": len(meta["tokenizer.ggml.tokens"]), "pre": meta["tokenizer.ggml.pre"]}
        with open(out_dir / f"{name}.json", "w") as f:
            json.dump({"meta": header, "tokenizer": tokenizer, "tensors": tensors}, f, indent=0)
    return 0


def synth_nbytes(shape, type_name: str) -> int:
    from llamarig.planner import ggml_types
    return ggml_types.by_name(type_name).nbytes(tuple(shape))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
