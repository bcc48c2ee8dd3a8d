"""Small headers of the architectures the planner sizes, for llama.cpp's own sizing (testbed/oracle.py).

Only hyperparameters: the tensors each file needs are asked of llama.cpp's loader. The values are small
(a few layers, a narrow model) but keep each family's structure: which layers attend, slide or recur, the
recurrent state's dimensions, MLA's ranks, next-token layers. Hybrids whose attention layers are marked
by zero KV heads get per-layer arrays, as their converters write them.
"""

from __future__ import annotations

from testbed import synth

N_VOCAB = 4096


def header(arch: str, n_layer: int = 4, n_embd: int = 512, n_head=8, n_head_kv=2, head_dim: int = 64,
           n_ff=1024, ctx_train: int = 262144, **keys) -> dict:
    """A header llama.cpp loads: the common keys, then ``keys`` (without the ``ARCH.`` prefix; dots as ``__``)."""
    meta = {"block_count": n_layer, "context_length": ctx_train, "embedding_length": n_embd,
            "feed_forward_length": n_ff, "attention.head_count": n_head, "attention.head_count_kv": n_head_kv,
            "attention.key_length": head_dim, "attention.value_length": head_dim,
            "rope.dimension_count": head_dim, "vocab_size": N_VOCAB,
            "attention.layer_norm_rms_epsilon": 1e-6} | {k.replace("__", "."): v for k, v in keys.items()}
    return ({"general.architecture": arch, "general.name": f"oracle {arch}", "general.alignment": synth.ALIGN}
            | {f"{arch}.{k}": v for k, v in meta.items()} | synth.tokenizer_meta(N_VOCAB))


def moe(n_expert: int = 8, used: int = 2, ff_exp: int = 256, **more) -> dict:
    return {"expert_count": n_expert, "expert_used_count": used, "expert_feed_forward_length": ff_exp} | more


def ssm(conv: int = 4, inner: int = 1024, state: int = 64, groups: int = 2, dt_rank: int = 16) -> dict:
    return {"ssm__conv_kernel": conv, "ssm__inner_size": inner, "ssm__state_size": state,
            "ssm__group_count": groups, "ssm__time_step_rank": dt_rank}


def _gdn() -> dict:  # Qwen3-Next / Qwen3.5: gated delta-net layers, one full-attention layer in four
    return ssm(groups=4, dt_rank=8) | {"full_attention_interval": 4}


def _gdn_qkv(n_layer: int) -> tuple[str, ...]:
    """Qwen3-Next's delta-net layers take their projections fused (attn_qkv, attn_gate) or as ssm_in, all
    optional to the loader: without one of them the file loads and its graph cannot be built."""
    return tuple(f"blk.{il}.{t}.weight" for il in range(n_layer) if (il + 1) % 4 for t in ("attn_qkv", "attn_gate"))


# name -> (header, tensors to start from: see oracle.Oracle.complete)
HEADERS: dict[str, tuple[dict, tuple[str, ...]]] = {
    # attention: grouped-query, next-token layers, multi-head latent
    "qwen3moe": (header("qwen3moe", head_dim=128, **moe()), ()),
    "glm4moe": (header("glm4moe", n_layer=5, head_dim=128, leading_dense_block_count=1, nextn_predict_layers=1,
                       expert_shared_count=1, expert_weights_scale=1.0, **moe()), ("blk.0.attn_norm.weight",)),
    # DeepSeek's own MLA widths (ik_llama.cpp refuses others): 512 latent + 64 rope, heads of 128 + 64
    "deepseek2": (header("deepseek2", n_head=8, n_head_kv=1, head_dim=576, leading_dense_block_count=1,
                         expert_shared_count=1, attention__kv_lora_rank=512, attention__q_lora_rank=256,
                         attention__key_length=576, attention__value_length=512,
                         attention__key_length_mla=192, attention__value_length_mla=128,
                         rope__dimension_count=64, expert_weights_scale=1.0, **moe()), ()),
    # sliding windows
    "gpt-oss": (header("gpt-oss", attention__sliding_window=128, **moe(ff_exp=512)), ()),
    "gemma2": (header("gemma2", n_layer=6, attention__sliding_window=512), ()),
    "gemma3": (header("gemma3", n_layer=12, attention__sliding_window=512), ()),
    "cohere2": (header("cohere2", n_layer=8, attention__sliding_window=512, logit_scale=0.25,
                       attention__layer_norm_epsilon=1e-5), ()),
    "step35": (header("step35", n_layer=6, attention__sliding_window=512,
                      attention__sliding_window_pattern=[True, True, False, True, True, False], rope__freq_base_swa=10000.0,
                      swiglu_clamp_exp=7.0, swiglu_clamp_shexp=7.0, **moe()), ()),
    "mimo2": (header("mimo2", n_layer=6, attention__sliding_window=512,
                     attention__sliding_window_pattern=[False, True, True, True, True, False], rope__freq_base_swa=10000.0,
                     **moe()), ()),
    "granite_swa": (header("granite_swa", n_layer=6, attention__sliding_window=512,
                           attention__sliding_window_pattern=[True, True, True, False, True, True], logit_scale=1.0,
                           residual_scale=1.0, embedding_scale=1.0, attention__scale=1.0), ()),
    "llama4": (header("llama4", n_layer=8, interleave_moe_layer_step=1, expert_shared_count=1, **moe()), ()),
    # hybrids and recurrent models
    "qwen3next": (header("qwen3next", n_layer=8, head_dim=128, expert_shared_feed_forward_length=256,
                         expert_shared_count=1, **_gdn(), **moe()), _gdn_qkv(8)),
    "qwen35moe": (header("qwen35moe", n_layer=8, head_dim=128, expert_shared_feed_forward_length=256,
                         rope__dimension_sections=[11, 11, 10, 0], **_gdn(), **moe()), _gdn_qkv(8)),
    "qwen35": (header("qwen35", n_layer=8, head_dim=128, rope__dimension_sections=[11, 11, 10, 0], **_gdn()), _gdn_qkv(8)),
    "mamba": (header("mamba", n_head=0, n_head_kv=0, n_ff=0, **ssm(groups=0)), ()),
    "mamba2": (header("mamba2", n_head=0, n_head_kv=0, n_ff=0, **ssm()), ()),
    "jamba": (header("jamba", n_layer=8, n_head_kv=[0, 0, 0, 2, 0, 0, 0, 2], **ssm(), **moe()), ()),
    "falcon-h1": (header("falcon-h1", **ssm()), ()),
    "granitehybrid": (header("granitehybrid", n_layer=8, n_head_kv=[0, 0, 0, 2, 0, 0, 0, 2], **ssm()), ()),
    "nemotron_h": (header("nemotron_h", n_layer=6, n_head_kv=[0, 0, 2, 0, 0, 0], n_ff=[0, 1024, 0, 0, 1024, 0],
                          attention__layer_norm_epsilon=1e-5, **ssm()), ()),
    "nemotron_h_moe": (header("nemotron_h_moe", n_layer=6, n_head_kv=[0, 0, 2, 0, 0, 0],
                              n_ff=[0, 1024, 0, 0, 1024, 0], attention__layer_norm_epsilon=1e-5,
                              expert_shared_feed_forward_length=256, **ssm(), **moe()), ()),
    "plamo2": (header("plamo2", n_layer=4, n_head_kv=[0, 2, 0, 2], **ssm(groups=0)), ()),  # its graph asserts no groups
    "lfm2moe": (header("lfm2moe", n_layer=6, n_head_kv=[0, 0, 2, 0, 0, 2], shortconv__l_cache=3,
                       leading_dense_block_count=1, expert_gating_func=2, **moe()), ()),
    "lfm2-swa": (header("lfm2", n_layer=6, n_head_kv=[0, 0, 2, 0, 0, 2], shortconv__l_cache=3,
                        attention__sliding_window=512), ()),
    "lfm2": (header("lfm2", n_layer=6, n_head_kv=[0, 0, 2, 0, 0, 2], shortconv__l_cache=3), ()),
}
