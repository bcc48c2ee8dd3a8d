"""Synthetic GGUF models: real headers, with the tensor names, shapes and types of real architectures.

``write_gguf(path, shape)`` writes a file whose header is exactly what llama.cpp
reads; the tensor data is a sparse hole (``random=False``: the planner reads
headers only, so a 100 GB shape costs a few MB of disk) or random bytes
(``random=True``, small shapes, for loading). ``split`` writes a split set the
way ``llama-gguf-split`` does (``split.no``, ``split.count``,
``split.tensors.count``). The writer is our own (not ``gguf.GGUFWriter``) so
that it can write ik_llama.cpp's type ids, which the ``gguf`` package lacks.

The shapes of the seeds' models are here: ``glm47_iq1m()`` (GLM-4.7 355B,
92 layers + 1 next-token layer, 160 experts, 8 KV heads of 128, about 101 GB)
and ``glm52_like()`` (an MLA model of GLM-5's dimensions, about 223 GB).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from llamarig.planner import ggml_types

ALIGN = 32


@dataclass
class Shape:
    arch: str
    n_layer: int                  # transformer blocks, next-token layers excluded
    n_embd: int
    n_vocab: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int                     # dense FFN width
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    n_expert_shared: int = 0
    n_dense_lead: int = 0
    n_nextn: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_rope: int = 0
    qk_nope: int = 0
    v_head: int = 0
    ctx_train: int = 32768
    types: dict = field(default_factory=dict)   # role -> ggml type name; see type_for
    extra_meta: dict = field(default_factory=dict)

    @property
    def block_count(self) -> int:
        return self.n_layer + self.n_nextn

    def type_for(self, role: str) -> str:
        t = self.types
        if role in t:
            return t[role]
        if role.endswith("_exps") and "exps" in t:
            return t["exps"]
        if role.endswith("_shexp") and "shexp" in t:
            return t["shexp"]
        if role == "norm":
            return "F32"
        return t.get("default", "Q8_0")


def _blk_tensors(s: Shape, il: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, ggml shape ne0-first, role) of one block."""
    E, H, Hkv, D = s.n_embd, s.n_head, s.n_head_kv, s.head_dim
    p = f"blk.{il}."
    out = [(p + "attn_norm.weight", (E,), "norm")]
    if s.kv_lora_rank:  # multi-head latent attention (deepseek2 layout)
        qk = s.qk_nope + s.qk_rope
        if s.q_lora_rank:
            out += [(p + "attn_q_a.weight", (E, s.q_lora_rank), "attn"),
                    (p + "attn_q_a_norm.weight", (s.q_lora_rank,), "norm"),
                    (p + "attn_q_b.weight", (s.q_lora_rank, H * qk), "attn")]
        else:
            out += [(p + "attn_q.weight", (E, H * qk), "attn")]
        out += [(p + "attn_kv_a_mqa.weight", (E, s.kv_lora_rank + s.qk_rope), "attn"),
                (p + "attn_kv_a_norm.weight", (s.kv_lora_rank,), "norm"),
                (p + "attn_k_b.weight", (s.qk_nope, s.kv_lora_rank, H), "attn"),
                (p + "attn_v_b.weight", (s.kv_lora_rank, s.v_head, H), "attn"),
                (p + "attn_output.weight", (H * s.v_head, E), "attn")]
    else:
        out += [(p + "attn_q.weight", (E, H * D), "attn"),
                (p + "attn_k.weight", (E, Hkv * D), "attn"),
                (p + "attn_v.weight", (E, Hkv * D), "attn"),
                (p + "attn_output.weight", (H * D, E), "attn")]
        if s.arch in ("qwen3", "qwen3moe", "gemma3"):
            out += [(p + "attn_q_norm.weight", (D,), "norm"), (p + "attn_k_norm.weight", (D,), "norm")]
        if s.arch == "glm4moe":
            out += [(p + "attn_q.bias", (H * D,), "norm"), (p + "attn_k.bias", (Hkv * D,), "norm"),
                    (p + "attn_v.bias", (Hkv * D,), "norm")]
    # glm4moe's loader names the pre-FFN norm post_attention_norm (LLM_TENSOR_ATTN_POST_NORM)
    out += [(p + ("post_attention_norm.weight" if s.arch == "glm4moe" else "ffn_norm.weight"), (E,), "norm")]
    if not s.n_expert or il < s.n_dense_lead:
        out += [(p + "ffn_gate.weight", (E, s.n_ff), "ffn"), (p + "ffn_up.weight", (E, s.n_ff), "ffn"),
                (p + "ffn_down.weight", (s.n_ff, E), "ffn")]
    else:
        X, F = s.n_expert, s.n_ff_exp
        out += [(p + "ffn_gate_inp.weight", (E, X), "norm"),
                (p + "ffn_gate_exps.weight", (E, F, X), "ffn_gate_exps"),
                (p + "ffn_up_exps.weight", (E, F, X), "ffn_up_exps"),
                (p + "ffn_down_exps.weight", (F, E, X), "ffn_down_exps")]
        if s.arch in ("glm4moe", "deepseek2"):
            out += [(p + "exp_probs_b.bias", (X,), "norm")]
        if s.n_expert_shared:
            FS = F * s.n_expert_shared
            out += [(p + "ffn_gate_shexp.weight", (E, FS), "ffn_shexp"),
                    (p + "ffn_up_shexp.weight", (E, FS), "ffn_shexp"),
                    (p + "ffn_down_shexp.weight", (FS, E), "ffn_shexp")]
    if il >= s.n_layer:  # next-token prediction layer (GLM-4.5 family)
        out += [(p + "nextn.eh_proj.weight", (2 * E, E), "attn"),
                (p + "nextn.enorm.weight", (E,), "norm"), (p + "nextn.hnorm.weight", (E,), "norm"),
                (p + "nextn.shared_head_norm.weight", (E,), "norm")]
    return out


def tensors(s: Shape) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, ggml type name) of every tensor, in llama.cpp's usual file order."""
    rows = [("token_embd.weight", (s.n_embd, s.n_vocab), "token_embd")]
    for il in range(s.block_count):
        rows += _blk_tensors(s, il)
    rows += [("output_norm.weight", (s.n_embd,), "norm"), ("output.weight", (s.n_embd, s.n_vocab), "output")]
    return [(n, shape, s.type_for(role)) for n, shape, role in rows]


def metadata(s: Shape) -> dict:
    a = s.arch
    m = {"general.architecture": a, "general.name": f"synthetic {a}", "general.alignment": ALIGN,
         f"{a}.block_count": s.block_count, f"{a}.context_length": s.ctx_train,
         f"{a}.embedding_length": s.n_embd, f"{a}.feed_forward_length": s.n_ff,
         f"{a}.attention.head_count": s.n_head, f"{a}.attention.head_count_kv": s.n_head_kv,
         f"{a}.attention.key_length": s.head_dim, f"{a}.attention.value_length": s.head_dim,
         f"{a}.rope.dimension_count": s.head_dim, f"{a}.vocab_size": s.n_vocab,
         f"{a}.attention.layer_norm_rms_epsilon": 1e-6}
    if s.n_expert:
        m |= {f"{a}.expert_count": s.n_expert, f"{a}.expert_used_count": s.n_expert_used,
              f"{a}.expert_feed_forward_length": s.n_ff_exp}
    if s.n_expert_shared:
        m[f"{a}.expert_shared_count"] = s.n_expert_shared
    if s.n_dense_lead:
        m[f"{a}.leading_dense_block_count"] = s.n_dense_lead
    if s.n_nextn:
        m[f"{a}.nextn_predict_layers"] = s.n_nextn
    if s.kv_lora_rank:
        m |= {f"{a}.attention.kv_lora_rank": s.kv_lora_rank, f"{a}.attention.q_lora_rank": s.q_lora_rank,
              f"{a}.attention.key_length": s.kv_lora_rank + s.qk_rope, f"{a}.attention.value_length": s.kv_lora_rank,
              f"{a}.attention.key_length_mla": s.qk_nope + s.qk_rope, f"{a}.attention.value_length_mla": s.v_head,
              f"{a}.attention.head_count_kv": 1, f"{a}.rope.dimension_count": s.qk_rope}
    return m | s.extra_meta


# ---------------------------------------------------------------- a vocabulary llama.cpp loads

def bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table (the symbols of a byte-level BPE vocab)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def tokenizer_meta(n_vocab: int, pre: str = "default") -> dict:
    """A byte-level BPE vocabulary of exactly ``n_vocab`` tokens (256 byte symbols, fillers, GLM-style
    specials) that llama.cpp's loader accepts: what a synthetic file needs to be loaded, not to be read."""
    byte_syms = bytes_to_unicode()
    specials = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>"]
    n_fill = n_vocab - len(byte_syms) - len(specials)
    tokens = byte_syms + [f"tok{i}" for i in range(n_fill)] + specials   # fillers: plain ASCII symbols
    types = [1] * (len(byte_syms) + n_fill) + [3] * len(specials)         # 1 normal, 3 control
    assert len(tokens) == n_vocab and len(set(tokens)) == n_vocab
    eos = tokens.index("<|endoftext|>")
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": pre,
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": ["t o", "to k"],
        "tokenizer.ggml.eos_token_id": eos,
        "tokenizer.ggml.padding_token_id": eos,
        "tokenizer.ggml.bos_token_id": tokens.index("[gMASK]"),
        "tokenizer.ggml.add_bos_token": False,
    }


# ---------------------------------------------------------------- writing

def _kv(key: str, value) -> bytes:
    k = key.encode()
    out = struct.pack("<Q", len(k)) + k
    if isinstance(value, bool):
        return out + struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return out + (struct.pack("<Iq", 11, value) if value < 0 else
                      struct.pack("<II", 4, value) if value < 2**32 else struct.pack("<IQ", 10, value))
    if isinstance(value, float):
        return out + struct.pack("<If", 6, value)
    if isinstance(value, str):
        v = value.encode()
        return out + struct.pack("<IQ", 8, len(v)) + v
    if isinstance(value, list):
        if all(isinstance(x, bool) for x in value):
            return out + struct.pack("<IIQ", 9, 7, len(value)) + struct.pack(f"<{len(value)}?", *value)
        if all(isinstance(x, int) for x in value):
            return out + struct.pack("<IIQ", 9, 5, len(value)) + struct.pack(f"<{len(value)}i", *value)
        if all(isinstance(x, str) for x in value):
            body = b"".join(struct.pack("<Q", len(x.encode())) + x.encode() for x in value)
            return out + struct.pack("<IIQ", 9, 8, len(value)) + body
    raise TypeError(f"{key}: cannot write {type(value).__name__}")


def _pad(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _type_id(name: str) -> int:
    return ggml_types.by_name(name).id


def write_gguf(path: str, meta: dict, rows: list[tuple[str, tuple[int, ...], str]], random: bool = False) -> int:
    """Write one GGUF file; returns its size. Data is a sparse hole unless `random`."""
    infos, offset = [], 0
    for name, shape, tname in rows:
        nbytes = ggml_types.by_name(tname).nbytes(shape)
        n = name.encode()
        infos.append(struct.pack("<Q", len(n)) + n + struct.pack("<I", len(shape))
                     + struct.pack(f"<{len(shape)}Q", *shape) + struct.pack("<IQ", _type_id(tname), offset))
        offset = _pad(offset + nbytes)
    kvs = b"".join(_kv(k, v) for k, v in meta.items())
    head = b"GGUF" + struct.pack("<IQQ", 3, len(rows), len(meta)) + kvs + b"".join(infos)
    head += b"\0" * (_pad(len(head)) - len(head))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(head)
        if random:
            left = offset
            while left:
                chunk = min(left, 1 << 24)
                f.write(os.urandom(chunk))
                left -= chunk
        f.truncate(len(head) + offset)
    os.replace(tmp, path)
    return len(head) + offset


def write_model(path: str, s: Shape, parts: int = 1, random: bool = False) -> list[str]:
    """Write `s` as one file or as a split set named like llama-gguf-split's (`path` is the stem)."""
    rows, meta = tensors(s), metadata(s)
    if parts == 1:
        write_gguf(path, meta, rows, random)
        return [path]
    stem = path[:-5] if path.endswith(".gguf") else path
    per = -(-len(rows) // parts)
    names = []
    for i in range(parts):
        chunk = rows[i * per:(i + 1) * per]
        m = (meta if i == 0 else {"general.architecture": s.arch}) | {
            "split.no": i, "split.count": parts, "split.tensors.count": len(rows)}
        name = f"{stem}-{i + 1:05d}-of-{parts:05d}.gguf"
        write_gguf(name, m, chunk, random)
        names.append(name)
    return names


# ---------------------------------------------------------------- shapes

def dense_llama(**kw) -> Shape:
    return Shape(**{"arch": "llama", "n_layer": 8, "n_embd": 512, "n_vocab": 4096, "n_head": 8, "n_head_kv": 2,
                    "head_dim": 64, "n_ff": 1536, "types": {"default": "Q8_0", "token_embd": "Q4_K"}} | kw)


def qwen3moe(**kw) -> Shape:
    """Qwen3-30B-A3B's shape by default (48 layers, 128 experts, 4 KV heads of 128)."""
    return Shape(**{"arch": "qwen3moe", "n_layer": 48, "n_embd": 2048, "n_vocab": 151936, "n_head": 32,
                    "n_head_kv": 4, "head_dim": 128, "n_ff": 6144, "n_expert": 128, "n_expert_used": 8,
                    "n_ff_exp": 768, "ctx_train": 262144, "types": {"default": "Q8_0"}} | kw)


_QWEN_NEXT_SSM = {"ssm.conv_kernel": 4, "ssm.inner_size": 4096, "ssm.state_size": 128, "ssm.group_count": 16,
                  "ssm.time_step_rank": 32, "full_attention_interval": 4}


def qwen3next(**kw) -> Shape:
    """Qwen3-Next-80B-A3B's shape (hybrid: gated delta-net layers, one full-attention layer in four)."""
    meta = {f"qwen3next.{k}": v for k, v in _QWEN_NEXT_SSM.items()} | {"qwen3next.expert_shared_feed_forward_length": 512}
    return Shape(**{"arch": "qwen3next", "n_layer": 48, "n_embd": 2048, "n_vocab": 151936, "n_head": 16,
                    "n_head_kv": 2, "head_dim": 256, "n_ff": 5120, "n_expert": 512, "n_expert_used": 10,
                    "n_ff_exp": 512, "n_expert_shared": 1, "ctx_train": 262144, "types": {"default": "Q4_K"},
                    "extra_meta": meta} | kw)


def qwen35moe(**kw) -> Shape:
    """Qwen3.5-35B-A3B's shape (hybrid like Qwen3-Next; 40 layers)."""
    meta = {f"qwen35moe.{k}": v for k, v in _QWEN_NEXT_SSM.items()}
    return Shape(**{"arch": "qwen35moe", "n_layer": 40, "n_embd": 2048, "n_vocab": 248320, "n_head": 16,
                    "n_head_kv": 2, "head_dim": 256, "n_ff": 5120, "n_expert": 256, "n_expert_used": 8,
                    "n_ff_exp": 512, "n_expert_shared": 1, "ctx_train": 262144, "types": {"default": "Q4_K"},
                    "extra_meta": meta} | kw)


def gpt_oss_120b(**kw) -> Shape:
    """gpt-oss-120b's shape: 36 layers, every other one a 128-token sliding window (llama.cpp's pattern)."""
    return Shape(**{"arch": "gpt-oss", "n_layer": 36, "n_embd": 2880, "n_vocab": 201088, "n_head": 64,
                    "n_head_kv": 8, "head_dim": 64, "n_ff": 2880, "n_expert": 128, "n_expert_used": 4,
                    "n_ff_exp": 2880, "ctx_train": 131072, "types": {"default": "Q8_0"},
                    "extra_meta": {"gpt-oss.attention.sliding_window": 128}} | kw)


def glm47_iq1m(**kw) -> Shape:
    """GLM-4.7 (355B-A32B) as an Unsloth UD-IQ1_M file: about 101 GB."""
    return Shape(**{"arch": "glm4moe", "n_layer": 92, "n_nextn": 1, "n_embd": 5120, "n_vocab": 151552,
                    "n_head": 96, "n_head_kv": 8, "head_dim": 128, "n_ff": 12288, "n_expert": 160,
                    "n_expert_used": 8, "n_ff_exp": 1536, "n_expert_shared": 1, "n_dense_lead": 3,
                    "ctx_train": 202752,
                    "types": {"default": "Q8_0", "ffn_gate_exps": "IQ1_M", "ffn_up_exps": "IQ1_M",
                              "ffn_down_exps": "IQ2_XS", "token_embd": "Q4_K", "output": "Q6_K"}} | kw)


def glm52_like(**kw) -> Shape:
    """An MLA model of GLM-5's dimensions (744B-A40B; 78 layers, 256 experts, kv_lora 512): about 223 GB."""
    return Shape(**{"arch": "deepseek2", "n_layer": 78, "n_embd": 6144, "n_vocab": 154880, "n_head": 64,
                    "n_head_kv": 64, "head_dim": 256, "n_ff": 12288, "n_expert": 256, "n_expert_used": 8,
                    "n_ff_exp": 2048, "n_expert_shared": 1, "n_dense_lead": 3, "kv_lora_rank": 512,
                    "q_lora_rank": 2048, "qk_rope": 64, "qk_nope": 192, "v_head": 256, "ctx_train": 202752,
                    "types": {"default": "Q8_0", "ffn_gate_exps": "IQ2_XXS", "ffn_up_exps": "IQ2_XXS",
                              "ffn_down_exps": "IQ2_S", "token_embd": "Q4_K", "output": "Q6_K"}} | kw)
