"""Write the serve bench's GGUF: Qwen3-30B-A3B's tensors, shapes and types (Q8_0), mostly zero data.

    python bench/serve_bench/write_model.py OUT.gguf [--layers 48] [--bpe-vocab 32000] [--bytes-only]

The shape is ``testbed.synth.qwen3moe()``: 48 layers, 2048 wide, 32 query heads and 4 KV heads of
128, 128 experts of 768 with 8 used, vocabulary 151936, every matrix Q8_0, norms and router F32
(about 30.5 GiB). The file is a sparse hole (zeros) except for what decides how the model routes:

* ``token_embd`` is random Q8_0 (valid blocks: a small fp16 scale, random int8),
* every layer's router ``ffn_gate_inp`` is random F32 (normal),
* every norm weight is 1.0.

With the attention and expert matrices zero, each block adds zero to the residual, so the hidden
state that reaches every layer's router is the token's (normalised) random embedding, and the random
router of that layer sends each token to its own 8 of 128 experts: the experts a batch touches are
spread as in a real MoE, not always the same 8 (all-zero weights would tie every router logit and
pick the same experts for every token). Kernels run on zero weights otherwise; the bytes moved and
the operations done are those of the real shapes, the values are not. ``output`` is zero, so the
logits are all equal and the server's sampler picks among ties (its cost does not depend on values).

The tokenizer is byte-level BPE (``gpt2`` model, ``qwen2`` pre-tokenizer) of exactly 151936 tokens:
the 256 byte symbols and ``--bpe-vocab`` minus 256 merges trained here, with the ``tokenizers``
package and Qwen2's own split pattern, on the very text the bench sends (Python's documentation,
``pydoc_data.topics``, as rig_programs/llamarig-bench.py joins it), then filler tokens, then
``<|endoftext|>`` (EOS, id 151643 as in Qwen), ``<|im_start|>``, ``<|im_end|>`` and pads. So ordinary
words are one or a few tokens, not one token a byte. Without ``tokenizers`` (or with
``--bytes-only``) it is bytes only: one token a byte. Which one was written is printed and kept in
``general.description``.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from llamarig.planner import ggml_types  # noqa: E402
from testbed import synth  # noqa: E402

N_VOCAB = 151936
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
N_NORMAL = 151643  # Qwen's first special token id


bytes_to_unicode = synth.bytes_to_unicode  # GPT-2's byte -> printable character table


def corpus_text() -> str:
    """The bench's text, joined exactly as rig_programs/llamarig-bench.py joins it."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k] for k in sorted(topics))


def train_bpe(vocab_size: int) -> tuple[list[str], list[str]]:
    """(tokens by id, merges "a b") of a byte-level BPE trained on the bench's text."""
    import json

    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([corpus_text()], trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert [vocab[t] for t in tokens] == list(range(len(tokens))), "trained ids are not dense"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, merges


def tokenizer_meta(bpe_vocab: int | None) -> tuple[dict, str]:
    if bpe_vocab:
        base, merges = train_bpe(bpe_vocab)
        what = f"byte-level BPE, {len(base)} tokens ({len(merges)} merges) trained on pydoc_data.topics"
    else:
        base, merges = bytes_to_unicode(), []
        what = "bytes only (256 byte symbols, no merges)"
    seen = set(base)
    fill, i = [], 0
    while len(base) + len(fill) < N_NORMAL:
        name = f"<fill{i}>"
        i += 1
        if name not in seen:
            fill.append(name)
    pads = [f"[PAD{i}]" for i in range(N_VOCAB - N_NORMAL - len(SPECIALS))]
    tokens = base + fill + SPECIALS + pads
    types = [1] * N_NORMAL + [3] * (len(SPECIALS) + len(pads))   # 1 normal, 3 control
    assert len(tokens) == N_VOCAB and len(set(tokens)) == N_VOCAB
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "qwen2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges or ["Ġ t"],
        "tokenizer.ggml.eos_token_id": N_NORMAL,
        "tokenizer.ggml.padding_token_id": N_NORMAL,
        "tokenizer.ggml.bos_token_id": N_NORMAL,
        "tokenizer.ggml.add_bos_token": False,
    }
    return meta, what


def shape(n_layer: int) -> synth.Shape:
    return synth.qwen3moe(n_layer=n_layer, extra_meta={"qwen3moe.rope.freq_base": 1000000.0})


def q8_0_random(n_values: int, rng: np.random.Generator, scale: float = 0.02) -> bytes:
    """Valid Q8_0 blocks (fp16 d, 32 x int8) of random values, |x| <= 127*scale."""
    nb = n_values // 32
    blocks = np.empty((nb, 34), dtype=np.uint8)
    blocks[:, :2] = np.frombuffer(np.float16(scale).tobytes(), dtype=np.uint8)
    blocks[:, 2:] = rng.integers(-127, 128, size=(nb, 32), dtype=np.int8).view(np.uint8)
    return blocks.tobytes()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--layers", type=int, default=48, help="transformer blocks (Qwen3-30B-A3B has 48)")
    ap.add_argument("--bpe-vocab", type=int, default=32000, help="trained BPE tokens, byte symbols included")
    ap.add_argument("--bytes-only", action="store_true", help="no BPE training: one token a byte")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    s = shape(args.layers)
    bpe = None if args.bytes_only else args.bpe_vocab
    if bpe:
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            print("write_model: no `tokenizers` package: bytes-only tokenizer", file=sys.stderr)
            bpe = None
    tmeta, what = tokenizer_meta(bpe)
    t_tok = time.monotonic() - t0
    meta = synth.metadata(s) | tmeta | {
        "general.description": f"llamarig serve bench: Qwen3-30B-A3B shape, zero weights except random "
                               f"token_embd and routers, norms 1; tokenizer: {what}"}
    rows = synth.tensors(s)
    os.makedirs(os.path.dirname(os.path.abspath(args.path)), exist_ok=True)
    size = synth.write_gguf(args.path, meta, rows, random=False)

    # where each tensor's data starts (write_gguf's layout: each tensor padded to ALIGN)
    offsets, off = {}, 0
    for name, shp, tname in rows:
        offsets[name] = (off, shp, tname)
        off = synth._pad(off + ggml_types.by_name(tname).nbytes(shp))
    data_start = size - off
    rng = np.random.default_rng(args.seed)
    written = 0
    with open(args.path, "r+b") as f:
        for name, (o, shp, tname) in offsets.items():
            n = int(np.prod(shp))
            if name == "token_embd.weight":
                assert tname == "Q8_0"
                blob = q8_0_random(n, rng)
            elif name.endswith("ffn_gate_inp.weight"):
                assert tname == "F32"
                blob = rng.standard_normal(n, dtype=np.float32).tobytes()
            elif name.endswith("norm.weight"):
                assert tname == "F32"
                blob = np.ones(n, dtype=np.float32).tobytes()
            else:
                continue
            assert len(blob) == ggml_types.by_name(tname).nbytes(shp), name
            f.seek(data_start + o)
            f.write(blob)
            written += len(blob)
    print(f"write_model: {args.path}: {len(rows)} tensors, {s.n_layer} layers, {size} bytes "
          f"({size / 2**30:.2f} GiB), {written / 2**20:.0f} MiB of it non-zero data; tokenizer: {what}; "
          f"tokenizer {t_tok:.1f} s, total {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
