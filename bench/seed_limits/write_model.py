"""Write the benchmark's GGUF: GLM-4.7 UD-IQ1_M's tensors, shapes and types, fewer layers, zero data.

    python bench/seed_limits/write_model.py OUT.gguf [--layers 24] [--random]

The shape is ``testbed.synth.glm47_iq1m(n_layer=N)``: every layer exactly as in the full model
(5120 wide, 96 query heads and 8 KV heads of 128, 160 experts of 1536 with 8 used, one shared
expert, IQ1_M gate/up and IQ2_XS down experts, Q8_0 attention and shared/dense FFN, F32 norms and
router, Q4_K token_embd, Q6_K output), 3 leading dense layers and the next-token (MTP) layer last,
only with N trunk layers instead of 92. The tensor data is a sparse hole (zeros: valid blocks of
every type, so the model computes zeros, never NaN) unless ``--random``.

What llama.cpp needs that the planner's synthetic headers do not carry is added here: a
tokenizer, byte-level BPE (``gpt2``, pre-tokenizer ``glm4``) of exactly n_vocab tokens (the 256
byte symbols, filler tokens, and ``<|endoftext|>`` as EOS), so that llama-server can tokenize a
chat prompt and print what it samples. (The first device run found that glm4moe's loader wants
``blk.N.post_attention_norm.weight`` where ``testbed/synth.py`` wrote ``ffn_norm``: same shape and
type, renamed here then, fixed in ``synth.py`` since.)

Also GLM-4.7's own hyperparameters: partial RoPE (64 of 128), rope base 1e6, sigmoid gating with
normalized weights scaled by 2.5.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from testbed import synth  # noqa: E402


def tokenizer_meta(n_vocab: int) -> dict:
    return synth.tokenizer_meta(n_vocab, pre="glm4")


def shape(n_layer: int) -> synth.Shape:
    a = "glm4moe"
    return synth.glm47_iq1m(n_layer=n_layer, extra_meta={
        f"{a}.rope.dimension_count": 64, f"{a}.rope.freq_base": 1000000.0,
        f"{a}.expert_weights_scale": 2.5, f"{a}.expert_weights_norm": True,
        f"{a}.expert_gating_func": 2,
    })


def rows_for(s: synth.Shape) -> list[tuple[str, tuple[int, ...], str]]:
    return list(synth.tensors(s))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--layers", type=int, default=24, help="trunk layers (GLM-4.7 has 92); the MTP layer is added")
    ap.add_argument("--random", action="store_true", help="random bytes instead of a sparse hole (slow: GB/s)")
    args = ap.parse_args(argv)
    s = shape(args.layers)
    meta = synth.metadata(s) | tokenizer_meta(s.n_vocab)
    rows = rows_for(s)
    os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
    size = synth.write_gguf(args.path, meta, rows, random=args.random)
    print(f"write_model: {args.path}: {len(rows)} tensors, {s.block_count} blocks "
          f"({s.n_layer} + {s.n_nextn} MTP), {size} bytes ({size / 2**30:.2f} GiB), "
          f"{'random' if args.random else 'sparse zero'} data")
    return 0


if __name__ == "__main__":
    sys.exit(main())
