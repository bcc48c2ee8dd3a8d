"""The memory model: what each layer of a model costs a device, for each fork.

Weights come from the GGUF headers (llamarig/gguf.py). The KV cache and the
compute buffers follow the forks' own allocation code (notes with file and
function: docs/memory-model.md):

* Context cells: llama.cpp pads ``--ctx-size`` to 256; with ``--parallel N`` and
  a non-unified cache each of the N streams gets ``pad256(ctx / N)`` cells.
  llama-server's automatic ``--parallel`` (4 slots) uses one unified cache.
  ik_llama.cpp pads to 256 with flash attention, 32 without, one cache for all slots.
* KV per layer and cell: ``row_size(type_k, n_embd_k_gqa) + row_size(type_v, n_embd_v_gqa)``.
  Next-token-prediction layers get none (nor weights: both forks skip them unless MTP
  drafting is on). Sliding-window layers (llama.cpp, ``--swa-full`` off) get
  ``pad256(min(cells, n_swa * streams + ubatch))`` cells.
* MLA (``kv_lora_rank`` set): K holds ``kv_lora_rank + n_rot`` values per cell and there is
  no V cache (V is a view of K), in llama.cpp and in ik_llama.cpp with flash attention
  and ``-mla`` 1-3; ik with ``-mla 1`` and no flash attention adds a transposed V.
* Compute buffer per device: ik_llama.cpp's own estimate (``get_layer_sizes``: the widest
  FFN intermediate of a ubatch, plus the input) for the largest layer on the device, the attention
  mask of a prompt ubatch (one F16 value, F32 without flash attention, per KV cell and ubatch token;
  one more for sliding-window layers), and the copy of CPU-resident experts offloaded to the GPU for
  batches of 32 tokens or more (llama.cpp one tensor at a time, ik_llama.cpp up and gate together);
  then the logits on the device of the output layer: llama.cpp adds them, for the tokens llama-server
  asks outputs for (one per slot: ``server_output_limits``), ik_llama.cpp reuses the layers' memory for
  them (``n_vocab * ubatch * 4``, the larger of the two counts). llama.cpp adds the F16 copy of a
  quantized K/V cache that its CUDA flash attention makes for prompt batches (inside the compute
  buffer since PR #23907).
* Beside its buffers, llama-server's process holds on every GPU it sees the CUDA context, cuBLAS's
  workspace and pools: ``RUNTIME`` (measured 704-752 MiB on an H200, driver 580, CUDA 13, in all 14
  cases of bench/results/fidelity-h200/run2: the device's peak use minus llama.cpp's own buffers;
  a consumer card's context is smaller, so there the total errs high). The per-device margin (1024 MiB by default, as
  llama.cpp's ``--fit-target``, which it keeps over its buffers once the context exists) is left free
  beyond all of that.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llamarig.planner import architectures, ggml_types
from llamarig.planner.gguf import ModelInfo, Tensor

MiB = 1 << 20
GiB = 1 << 30
DEFAULT_MARGIN = 1024 * MiB          # per GPU, like llama.cpp's --fit-target and ik's --fit-margin
DEFAULT_HOST_MARGIN = 4 * GiB        # system RAM kept for the OS and the server's own heap
RUNTIME = 720 * MiB                  # per GPU: CUDA context, cuBLAS workspace, pools (not a llama.cpp buffer)
POOL_GRANULE = 2 * MiB               # ggml_cuda_pool_vmm maps physical memory in the device's granularity
IK_SMS = 132                         # multiprocessors assumed for ik's per-SM pool scratch (H100/H200; a 3090 has 82)
EXPS = re.compile(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps")


def pad(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass(frozen=True)
class Settings:
    """What a service declares that changes memory."""
    fork: str = "llama.cpp"
    ctx: int = 4096
    parallel: int | None = None      # None: llama-server's automatic slots (unified cache)
    cache_k: str = "f16"
    cache_v: str = "f16"
    ubatch: int = 512
    flash_attn: bool = True
    mla: int = 3                     # ik_llama.cpp's -mla
    swa_full: bool = False
    kv_unified: bool | None = None   # llama.cpp's --kv-unified / --no-kv-unified; None: unified iff slots are automatic
    kv_offload: bool = True          # False: --no-kv-offload, the KV cache and recurrent state stay in host RAM
    cache_ram_mib: int = 8192        # llama-server's RAM prompt cache bound (--cache-ram; both forks' default)
    ctx_checkpoints: int = 32        # context checkpoints per slot (--ctx-checkpoints; both forks' default)
    repack: bool = False             # ik_llama.cpp's --run-time-repack: CPU weights repacked, never copied to a GPU


def host_caches(model: ModelInfo, s: Settings, c: "LayerCosts") -> int:
    """What llama-server keeps in RAM besides weights and CPU layers' caches: its prompt cache, up to
    ``--cache-ram`` MiB (server_prompt_cache; -1, no limit, is counted at the default bound), and, for models
    with sliding-window or recurrent layers, up to ``--ctx-checkpoints`` checkpoints per slot of one sequence's
    partial state (the sliding-window cells and the recurrent state: llama.cpp's
    ``LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY``, server-context.cpp; ik_llama.cpp checkpoints recurrent models only)."""
    prompt_cache = (s.cache_ram_mib if s.cache_ram_mib >= 0 else 8192) * MiB
    if s.ctx_checkpoints <= 0:
        return prompt_cache
    per_seq = sum(c.state or []) // state_slots(s)
    if s.fork == "ik_llama.cpp":
        # ik's server checkpoints only models with a recurrent state (server-context.cpp:
        # llama_model_has_recurrent), one sequence's partial state each
        return prompt_cache + per_seq * s.ctx_checkpoints * state_slots(s)
    if not s.swa_full and any(model.swa_layers):
        n, streams = cells(model, s)
        layer_cells = min(n, pad(model.n_swa * swa_seqs(s) + s.ubatch, 256)) * streams
        seq_cells = min(model.n_swa + s.ubatch, layer_cells)  # one sequence's window, as a checkpoint copies it
        state = c.state or [0] * len(c.kv)
        per_seq += sum((c.kv[il] - state[il]) * seq_cells // layer_cells
                       for il in range(len(c.kv)) if model.swa_layers[il])
    return prompt_cache + per_seq * s.ctx_checkpoints * state_slots(s)


def is_expert(name: str) -> bool:
    return bool(EXPS.search(name))


def skipped(model: ModelInfo) -> frozenset[str]:
    """Tensors both forks read past without allocating: the next-token-prediction layers."""
    if not model.n_nextn:
        return frozenset()
    first = model.n_layer - model.n_nextn
    return frozenset(t.name for t in model.tensors if t.layer is not None and t.layer >= first)


def unified(s: Settings) -> bool:
    """Whether llama.cpp's server keeps one cache for all slots (its default only with automatic slots)."""
    return s.kv_unified if s.kv_unified is not None else s.parallel is None


def swa_seqs(s: Settings) -> int:
    """Sequences one sliding-window cache holds a window for: every slot's when unified (automatic: 4)."""
    return (s.parallel or 4) if unified(s) else 1


def cells(model: ModelInfo, s: Settings) -> tuple[int, int]:
    """(cells per stream, streams) of the KV cache."""
    ctx = s.ctx or model.n_ctx_train
    if s.fork == "ik_llama.cpp":
        return pad(ctx, 256 if s.flash_attn else 32), 1
    ctx = pad(ctx, 256)
    if s.parallel and s.parallel > 1 and not unified(s):
        per = pad(ctx // s.parallel, 256)
        return per, s.parallel
    return ctx, 1


def _row(type_name: str, n: int) -> int:
    return ggml_types.by_name(type_name).row_bytes(n)


# Hybrid and recurrent families whose layers' kind follows from the header (llama.cpp, src/models/*.cpp
# load_arch_hparams): a layer is recurrent ...
_RECR_ALL = frozenset({"mamba", "mamba2", "falcon-h1"})                    # ... always
_RECR_INTERVAL = frozenset({"qwen3next", "qwen35", "qwen35moe"})           # ... unless (il + 1) % interval == 0
_RECR_NO_KV = frozenset({"jamba", "granitehybrid", "plamo2", "lfm2", "lfm2moe"})  # ... where it has no KV heads
_RECR_NO_KV_NO_FF = frozenset({"nemotron_h", "nemotron_h_moe"})           # ... where it has neither KV nor FFN
_SSM_UNGROUPED = frozenset({"mamba", "jamba"})
_ATTN_EVERYWHERE = frozenset({"falcon-h1"})  # parallel hybrid: every layer has attention and a recurrent state


def recurrent_layers(model: ModelInfo) -> list[bool]:
    """Which layers keep a recurrent state (llama.cpp's ``is_recr``); next-token layers never do."""
    n, trunk, a = model.n_layer, model.n_layer - model.n_nextn, model.arch
    if a in _RECR_ALL:
        return [il < trunk for il in range(n)]
    if a in _RECR_INTERVAL:
        stored = model.key("attention.recurrent_layers")
        if isinstance(stored, list):
            return [bool(v) for v in stored][:n] + [False] * max(0, n - len(stored))
        interval = int(model.key("full_attention_interval", 4) or 4)
        return [il < trunk and (il + 1) % interval != 0 for il in range(n)]
    if a in _RECR_NO_KV:
        return [il < trunk and not model.n_head_kv[il] for il in range(n)]
    if a in _RECR_NO_KV_NO_FF:
        ff = model.key("feed_forward_length", 0)
        ff = [int(v) for v in ff] if isinstance(ff, list) else [int(ff or 0)] * n
        ff += [0] * (n - len(ff))
        return [il < trunk and not model.n_head_kv[il] and not ff[il] for il in range(n)]
    return [False] * n


def recurrent_row_floats(model: ModelInfo) -> tuple[int, int]:
    """(n_embd_r, n_embd_s): floats of one sequence's conv (or shortconv) state and SSM state per layer
    (llama-hparams.cpp)."""
    l_cache = int(model.key("shortconv.l_cache", 0) or 0)
    if l_cache:  # LFM2
        return model.n_embd * (l_cache - 1), 0
    d_conv = int(model.key("ssm.conv_kernel", 0) or 0)
    d_inner = int(model.key("ssm.inner_size", 0) or 0)
    d_state = int(model.key("ssm.state_size", 0) or 0)
    # Mamba-1 layers have no groups: mamba's and jamba's loaders never read ssm.group_count, whatever the file says
    n_group = int(model.key("ssm.group_count", 0) or 0) if model.arch not in _SSM_UNGROUPED else 0
    return max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state), d_state * d_inner


def ik_state_floats(model: ModelInfo) -> int:
    """ik_llama.cpp's one-sequence state of a delta-net layer (llama-hparams.h n_embd_v_s): the conv state
    (d_conv - 1) * (2 * d_state * n_group + d_inner) and a head_v_dim^2 matrix per value head."""
    d_conv = int(model.key("ssm.conv_kernel", 0) or 0)
    d_inner = int(model.key("ssm.inner_size", 0) or 0)
    d_state = int(model.key("ssm.state_size", 0) or 0)
    n_group = int(model.key("ssm.group_count", 0) or 0)
    dt_rank = int(model.key("ssm.time_step_rank", 0) or 0)
    if n_group <= 0:
        return d_state * d_inner
    head_v = d_inner // dt_rank if dt_rank > 0 else 0
    return max(d_conv - 1, 0) * (2 * d_state * n_group + d_inner) + head_v * head_v * dt_rank


def state_slots(s: Settings) -> int:
    """Sequences a recurrent state is kept for: the server's slots (when not declared, llama.cpp's automatic 4,
    ik_llama.cpp's one)."""
    if s.parallel:
        return max(1, s.parallel)
    return 1 if s.fork == "ik_llama.cpp" else 4


def state_layer(model: ModelInfo, il: int, s: Settings, recurrent: list[bool] | None = None) -> int:
    """Recurrent-state bytes of layer `il` (F32 conv and SSM states, one per slot; llama.cpp's
    llama-memory-recurrent.cpp, ik_llama.cpp's cache_s_l in llama_kv_cache_init)."""
    if not (recurrent or recurrent_layers(model))[il]:
        return 0
    if s.fork == "ik_llama.cpp":
        n, _ = cells(model, s)
        return _row("f32", ik_state_floats(model)) * min(state_slots(s), n)
    r, st = recurrent_row_floats(model)
    return (_row("f32", r) + _row("f32", st)) * state_slots(s) if (r or st) else 0


def kv_layer(model: ModelInfo, il: int, s: Settings, recurrent: list[bool] | None = None) -> int:
    """KV-cache bytes of layer `il` (a hybrid's recurrent layers have none)."""
    if il >= model.n_layer - model.n_nextn or not model.n_head_kv[il]:
        return 0
    if (recurrent or recurrent_layers(model))[il] and model.arch not in _ATTN_EVERYWHERE:
        return 0
    n, streams = cells(model, s)
    ik = s.fork == "ik_llama.cpp"
    if model.is_mla and (ik or model.head_dim_k_mla):
        width = model.kv_lora_rank + model.n_rot
        if ik and s.mla == 0:  # ik: plain attention on the decompressed heads
            k = _row(s.cache_k, model.head_dim_k_mla or model.head_dim_k) * model.n_head[il]
            v = _row(s.cache_v, (model.head_dim_v_mla or model.head_dim_v) * model.n_head[il])
            return (k + v) * n
        if ik and not s.flash_attn:
            kind = s.cache_k if s.mla == 1 else s.cache_v
            extra = _row(s.cache_v, model.kv_lora_rank) * n if s.mla == 1 else 0
            return _row(kind, width) * n + extra
        return _row(s.cache_k, width) * n * streams + _indexer(model, il, s) * n * streams
    if not ik and model.swa_layers[il] and not s.swa_full:
        # llama-kv-cache-iswa.cpp: n_swa * (unified ? n_seq_max : 1) + n_ubatch; the server's automatic
        # slots are 4 with a unified cache
        n = min(n, pad(model.n_swa * swa_seqs(s) + s.ubatch, 256))
    heads = model.n_head_kv[il]
    if ik:  # ik: K rows are per head, so a type's row metadata (q8_KV) counts per head and cell
        k = _row(s.cache_k, model.head_dim_k) * heads
    else:
        k = _row(s.cache_k, model.head_dim_k * heads)
    v = _row(s.cache_v, model.head_dim_v * heads)
    return (k + v) * n * streams


def _indexer(model: ModelInfo, il: int, s: Settings) -> int:
    """DSA architectures (GLM-5: glm-dsa) keep an indexer key per cell on indexer layers."""
    width = int(model.key("attention.indexer.key_length", 0) or 0)
    if not width:
        return 0
    types = model.key("attention.indexer.types")
    if isinstance(types, list):
        full = bool(types[il]) if il < len(types) else False
    elif s.fork == "ik_llama.cpp":
        full = il <= 1 or il % 4 == 2
    else:  # llama.cpp: every layer below 1M trained context (GLM-5, 5.1); sparser after (approximated)
        full = model.n_ctx_train < 1048576 or il < 3 or il % 4 == 2
    return _row("f16" if s.fork == "ik_llama.cpp" else s.cache_k, width) if full else 0


def ik_pool(model: ModelInfo, s: Settings) -> int:
    """ik_llama.cpp's CUDA memory pool at its high-water mark, per GPU, beyond what ``RUNTIME`` holds: the
    pool (ggml_cuda_pool_vmm) keeps the largest scratch any one op took until the server exits. Two ops set
    it (docs/memory-model.md, "ik_llama.cpp's CUDA pool"):

    * the fused MoE up/gate op (ggml_cuda_moe_up_gate_unary, mmq_id branch, on by default) holds F32 up and
      gate results, a q8_1 copy of the ubatch's activations per used expert and the routing ids, plus the
      matmul's per-SM stream-k fixup: ``T * k * (8 + 1.125 * pad512(n_embd) + 4 * up/gate rows)`` bytes;
    * flash attention's ``dst_tmp_meta`` (launch_fattn_mma) of ``32 * (D + 4)`` bytes per query row and
      head, for ubatches up to 2048 tokens; above that (and for badly balanced tiles) ``2 * SMs`` blocks of
      64 rows. A full-context prompt meets every ubatch size up to the declared one, so the worst T counts.

    Measured (bench/results/fidelity-h100/run5, H100): 786-808 MiB beside the buffers at ubatch 512 and
    926-948 at 4096 (a 3000-token ubatch), i.e. ``RUNTIME`` plus 66 and 202 MiB of pool. MLA attention runs
    other kernels, whose scratch is not modelled here (see ``_ik_fa_pool``)."""
    if s.fork != "ik_llama.cpp":
        return 0
    t = min(s.ubatch, s.ctx or s.ubatch)
    moe = 0
    if model.n_expert and model.n_expert_used:
        k = model.n_expert_used
        rows = max((sum(x.shape[1] for x in model.tensors if x.layer == il and len(x.shape) >= 2
                        and re.search(r"\.ffn_(up|gate|gate_up)_exps", x.name))
                    for il in range(model.n_layer)), default=0)
        if rows:
            moe = (t * k * (8 + pad(model.n_embd, 512) * 9 // 8 + 4 * rows) + 4 * (model.n_expert + 1)
                   + 18432 + 65536 * IK_SMS)
    return pad(max(moe, _ik_fa_pool(model, s, t)), POOL_GRANULE)


def _ik_fa_pool(model: ModelInfo, s: Settings, t: int) -> int:
    """Flash attention's scratch in ik's pool (fattn-mma-f16.cuh launch_fattn_mma), its worst over prompt
    ubatches of up to ``t`` tokens: the stream-k bookkeeping, and with a quantized cache the F16 copies of
    one layer's K and V over the whole context, alive beside it. MLA's prompt attention runs other kernels
    (fattn-new-mma.cu, decompressed heads in groups of ``attn_max_batch``) whose scratch is not modelled."""
    if not s.flash_attn or model.is_mla or not any(model.n_head_kv):
        return 0
    d = max(model.head_dim_k, model.head_dim_v)
    heads = max(model.n_head or [0])
    meta = max(min(t, 2048) * heads * (d + 4) * 32, 2 * IK_SMS * 64 * (d + 4) * 32)
    quant = lambda name: name.lower() not in ("f16", "bf16", "f32")
    n, _streams = cells(model, s)
    copies = 2 * max(model.n_head_kv) * n * ((model.head_dim_k if quant(s.cache_k) else 0)
                                              + (model.head_dim_v if quant(s.cache_v) else 0))
    return meta + copies


def runtime(model: ModelInfo, s: Settings) -> int:
    """What llama-server's process holds on a GPU beside its buffers: ``RUNTIME``, and ik_llama.cpp's pool."""
    return RUNTIME + ik_pool(model, s)


def layer_compute(model: ModelInfo, il: int, s: Settings) -> int:
    """ik_llama.cpp's estimate of a layer's compute buffer (get_layer_sizes), used for both forks."""
    t = min(s.ubatch, s.ctx or s.ubatch)
    exps = shexp = dense = 0
    norm = False
    for x in model.tensors:
        if x.layer != il or x.name.endswith((".bias", ".scale")) or len(x.shape) < 2:
            if x.layer == il and "norm" in x.name:
                norm = True
            continue
        rows = x.shape[1]
        if is_expert(x.name):
            exps += rows * t * model.n_expert_used * 4
        elif "_shexp" in x.name:
            shexp += rows * t * 4
        elif re.search(r"\.ffn_(up|gate|down)\.", x.name):
            dense += rows * t * 4
    inp = model.n_embd * t * 4 * (2 if norm else 1)
    return max(exps, shexp, dense) + inp


def fa_scratch(model: ModelInfo, il: int, s: Settings) -> int:
    """llama.cpp CUDA flash attention: a quantized K/V cache is copied to F16 for prompt batches."""
    if s.fork != "llama.cpp" or not s.flash_attn:
        return 0
    n, streams = cells(model, s)
    quant = lambda t: t.lower() not in ("f16", "bf16", "f32")
    if model.is_mla and model.head_dim_k_mla:
        return 2 * (model.kv_lora_rank + model.n_rot) * n * streams if quant(s.cache_k) else 0
    out = 0
    if quant(s.cache_k):
        out += 2 * model.head_dim_k * model.n_head_kv[il] * n * streams
    if quant(s.cache_v):
        out += 2 * model.head_dim_v * model.n_head_kv[il] * n * streams
    return out


def outputs(s: Settings) -> int:
    """Tokens of a ubatch whose logits are computed: llama-server reserves its graphs for ``n_outputs_max``,
    one per slot without a draft model (server-context.cpp server_output_limits); ik_llama.cpp for all."""
    t = min(s.ubatch, s.ctx or s.ubatch)
    return t if s.fork == "ik_llama.cpp" else min(t, state_slots(s))


def logits(model: ModelInfo, s: Settings) -> int:
    return model.n_vocab * outputs(s) * 4


def kq_mask(model: ModelInfo, s: Settings) -> int:
    """The attention mask of a prompt ubatch, on every GPU that runs attention: [n_kv, n_tokens], F16 with
    flash attention, F32 without; a second one for sliding-window layers. llama.cpp (llm_graph_input_attn_kv,
    per stream) sizes that one over the window's cells; ik_llama.cpp (build_inp_KQ_mask_swa) over all of
    them (measured for ik: 16 MiB more at 32K than at 16K at ubatch 512, bench/results/fidelity-h200/run3)."""
    t = min(s.ubatch, s.ctx or s.ubatch)
    n, _streams = cells(model, s)
    size = 2 if s.flash_attn else 4
    out = n * t * size
    if s.fork == "ik_llama.cpp":
        return out * (2 if any(model.swa_layers) else 1)
    if any(model.swa_layers) and not s.swa_full:
        out += min(n, pad(model.n_swa * swa_seqs(s) + s.ubatch, 256)) * t * size
    return out


def offload_copy(model: ModelInfo, cpu_expert_layers: list[int], s: Settings) -> int:
    """llama.cpp copies a CPU-resident expert tensor to the GPU for prompt batches of >= 32 tokens, one
    tensor at a time into the compute buffer (the scheduler's split inputs): the largest one counts
    (measured: Qwen3-30B-A3B's 204 MiB expert tensor in its 289 MiB compute buffer at ubatch 512).
    ik_llama.cpp only when ubatch * experts used >= 32 * experts, never with ``--run-time-repack``, and two
    tensors at once: its fused MoE
    op takes up and gate together (measured: 452 MiB of compute at ubatch 512 with a 297 MiB logits
    buffer it reuses, where a whole layer's experts are 612: bench/results/fidelity-h200/run3)."""
    if not cpu_expert_layers or s.ubatch < 32:
        return 0
    if s.fork == "ik_llama.cpp" and s.repack:
        # repacked tensors are CPU-only types: their ops stay on the CPU (measured: 305 MiB of compute, the
        # logits alone, where 488 with the copy: bench/results/tune-h100-try6, b1c4)
        return 0
    on_cpu = set(cpu_expert_layers)
    sizes = sorted((t.nbytes for t in model.tensors if t.layer in on_cpu and is_expert(t.name)), reverse=True)
    if s.fork == "ik_llama.cpp":
        if s.ubatch * model.n_expert_used < 32 * max(model.n_expert, 1):
            return 0
        return sum(sizes[:2])
    return sizes[0] if sizes else 0


@dataclass
class LayerCosts:
    """Per-layer bytes: weights besides the routed experts, routed experts, context memory (KV cache and
    recurrent state, which both live on the layer's device), compute."""
    base: list[int]
    experts: list[int]
    kv: list[int]        # KV cache + recurrent state (``state``)
    compute: list[int]
    scratch: list[int]
    output: int          # output-layer weights (output, output_norm, ...; a tied output duplicates token_embd)
    host_only: int       # token_embd: the input layer stays on the CPU in both forks
    expert_tensors: list[list[Tensor]]
    state: list[int] | None = None  # recurrent state per layer (included in ``kv``)
    kv_on_host: bool = False        # --no-kv-offload: ``kv`` lives in host RAM whatever device the layer is on

    def gpu_kv(self, il: int) -> int:
        """Context memory layer ``il`` puts on its GPU."""
        return 0 if self.kv_on_host else self.kv[il]


def layer_costs(model: ModelInfo, s: Settings) -> LayerCosts:
    """Every layer's costs; ArchitectureError for a model the fork does not load or the model does not size."""
    architectures.check(s.fork, model.arch)
    n = model.n_layer
    skip = skipped(model)
    base, experts = [0] * n, [0] * n
    exp_tensors: list[list[Tensor]] = [[] for _ in range(n)]
    output = host = 0
    has_output = any(t.name == "output.weight" for t in model.tensors)
    for t in model.tensors:
        if t.name in skip:
            continue
        il = t.layer
        if il is None:
            if t.name.startswith("token_embd"):
                host += t.nbytes
                if t.name == "token_embd.weight" and not has_output:
                    output += t.nbytes  # tied embeddings: a second copy on the output device
            else:
                output += t.nbytes
        elif is_expert(t.name):
            experts[il] += t.nbytes
            exp_tensors[il].append(t)
        else:
            base[il] += t.nbytes
    recurrent = recurrent_layers(model)
    attention = [kv_layer(model, il, s, recurrent) for il in range(n)]
    state = [state_layer(model, il, s, recurrent) for il in range(n)]
    kv = [a + b for a, b in zip(attention, state)]
    compute = [layer_compute(model, il, s) if il < n - model.n_nextn else 0 for il in range(n)]
    scratch = [fa_scratch(model, il, s) if attention[il] else 0 for il in range(n)]
    return LayerCosts(base, experts, kv, compute, scratch, output, host, exp_tensors, state, not s.kv_offload)


def ik_layer_sizes(model: ModelInfo, s: Settings, costs: LayerCosts | None = None) -> tuple[list[float], float]:
    """ik_llama.cpp's get_layer_sizes: per layer weights (experts included) + KV, the output layer
    with the logits beyond the compute reserve, and that reserve (the largest layer's compute)."""
    c = costs or layer_costs(model, s)
    n = model.n_layer
    max_compute = float(max(c.compute or [0]))
    sizes = [float(c.base[il] + c.experts[il] + c.gpu_kv(il)) for il in range(n)]
    sizes.append(float(c.output) + max(float(logits(model, s)) - max_compute, 0.0))
    return sizes, max_compute


def device_compute(model: ModelInfo, s: Settings, c: LayerCosts, layers: list[int], has_output: bool,
                   cpu_expert_layers: list[int]) -> int:
    """Compute-buffer bytes of one GPU holding `layers` (and the output layer when `has_output`)."""
    if not layers and not has_output:
        return 0
    out = max([c.compute[il] for il in layers] or [0])
    out += max([c.scratch[il] for il in layers] or [0])
    state = c.state or [0] * len(c.kv)
    if any(c.kv[il] - state[il] > 0 for il in layers):  # attention here: its mask
        out += kq_mask(model, s)
    if layers:
        out += offload_copy(model, cpu_expert_layers, s)
    if has_output:  # ik_llama.cpp's graph reuses the layers' buffers for the logits; llama.cpp's adds them
        out = max(out, ik_output(model, s)) if s.fork == "ik_llama.cpp" else out + logits(model, s)
    return out


def ik_output(model: ModelInfo, s: Settings) -> int:
    """ik_llama.cpp's compute at the output layer: the logits, with the last hidden state and its norm
    still held (measured: 2,438 MiB at ubatch 4096 = 2,374 of logits + 2 x 32 of F32 states,
    bench/results/fidelity-h100/run5)."""
    t = min(s.ubatch, s.ctx or s.ubatch)
    norm = any(x.name.startswith("output_norm") for x in model.tensors)
    return logits(model, s) + model.n_embd * t * 4 * (2 if norm else 1)
