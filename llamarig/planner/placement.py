"""Where llama.cpp puts each tensor, given the flags: the rules of the loaders, replayed offline.

This is the independent check of every plan (the planner does its own
bookkeeping; tests compare the two) and the check of placements written by hand.

The rules (llama.cpp ``src/llama-model.cpp`` ``load_tensors``; ik_llama.cpp
``src/llama-load-tensors.cpp``, same rules for split mode layer):

* ``--n-gpu-layers`` counts the repeating layers plus the output layer
  (``n_layer + 1`` is all); the first ``n_layer + 1 - ngl`` layers stay on the CPU.
* Offloaded layer ``il`` goes to the device ``upper_bound(splits, (il - start) / n_offloaded)``
  where ``splits`` are the cumulative, normalized ``--tensor-split`` proportions; the
  output layer is layer ``n_layer``. The input layer (``token_embd``) always stays on the CPU.
* ``--override-tensor PATTERN=DEVICE``: the first pattern that ``std::regex_search`` finds
  anywhere in the tensor's name decides its buffer, over the layer's device. The KV cache
  of a layer stays on the layer's device whatever the overrides say.
* ``--cpu-moe`` / ``--n-cpu-moe N`` are overrides too (see :func:`cpu_moe_overrides`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CPU = "CPU"
_BLK = re.compile(r"^blk\.(\d+)\.")
# llama.cpp common/common.h LLM_FFN_EXPS_REGEX: the routed experts' tensors.
EXPS_REGEX = r"\.ffn_(up|down|gate|gate_up)_(ch|)exps"


def cuda(i: int) -> str:
    return f"CUDA{i}"


@dataclass
class Flags:
    """The placement flags of one service, as llama-server would see them."""
    n_devices: int
    n_gpu_layers: int | None = None       # None: all layers (both forks' default on GPU rigs since 2025)
    tensor_split: list[float] | None = None
    overrides: list[tuple[str, str]] = field(default_factory=list)  # --override-tensor, in order
    n_cpu_moe: int | None = None
    cpu_moe: bool = False


def cpu_moe_overrides(flags: Flags, layers: list[str], n_layer: int, fork: str, n_nextn: int = 0,
                      split_mode: str | None = None) -> list[tuple[str, str]]:
    """The overrides --cpu-moe / --n-cpu-moe add, after the explicit ones (both parsers append them).

    llama.cpp (common/arg.cpp): ``--n-cpu-moe N`` adds ``blk\\.i\\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU``
    for the first N layers, i = 0..N-1. ik_llama.cpp (src/llama-load-tensors.cpp, since #2262) takes the
    last N layers before the next-token layers; with split mode layer on two or more GPUs it shares N
    among the GPUs in proportion to their layers and takes each GPU's last ones.
    """
    if flags.cpu_moe:
        return [(EXPS_REGEX, CPU)]
    n = flags.n_cpu_moe or 0
    if not n:
        return []
    if fork != "ik_llama.cpp":
        return [(rf"blk\.{i}{EXPS_REGEX}", CPU) for i in range(min(n, n_layer))]
    last = n_layer - n_nextn
    gpus = sorted({d for d in layers[:last] if d != CPU})
    if split_mode in (None, "layer") and len(gpus) >= 2 and n < last:
        counts = {d: sum(1 for x in layers[:last] if x == d) for d in gpus}
        share = {d: round(counts[d] / last * n) for d in gpus}
        while sum(share.values()) > n:
            share[max(share, key=share.get)] -= 1
        while sum(share.values()) < n:
            share[min(share, key=share.get)] += 1
        chosen = []
        for d in gpus:
            own = [il for il in range(last) if layers[il] == d]
            chosen += own[len(own) - share[d]:] if share[d] else []
    else:
        chosen = list(range(max(last - n, 0), last))
    return [(rf"blk\.{i}{EXPS_REGEX}", CPU) for i in sorted(chosen)]


def layer_devices(n_layer: int, flags: Flags) -> list[str]:
    """Device of each layer 0..n_layer-1 and of the output layer (index n_layer)."""
    n_dev = flags.n_devices
    ngl = n_layer + 1 if flags.n_gpu_layers is None or flags.n_gpu_layers < 0 else flags.n_gpu_layers
    if n_dev == 0:
        return [CPU] * (n_layer + 1)
    ts = flags.tensor_split or [1.0] * n_dev
    if len(ts) < n_dev:
        ts = list(ts) + [0.0] * (n_dev - len(ts))
    if all(x == 0 for x in ts):
        ts = [1.0] * n_dev
    # float32 arithmetic as in the loader: cumulative sums, then normalized
    import numpy as np
    splits = np.cumsum(np.array(ts[:n_dev], dtype=np.float32), dtype=np.float32)
    splits = (splits / splits[-1]).astype(np.float32)
    start = max(n_layer + 1 - ngl, 0)
    act = min(ngl, n_layer + 1)
    out = []
    for il in range(n_layer + 1):
        if il < start or il - start >= act:
            out.append(CPU)
            continue
        x = np.float32(il - start) / np.float32(act)
        d = int(np.searchsorted(splits, x, side="right"))
        out.append(cuda(min(d, n_dev - 1)))
    return out


def ik_layer_devices(n_layer: int, flags: Flags, layer_sizes: list[float], max_compute: float,
                     budgets: list[int] | None = None) -> list[str]:
    """ik_llama.cpp's layer split (src/llama.cpp llm_load_tensors): by memory, not by layer count.

    ``layer_sizes[il]`` is a layer's weights plus its KV cache, ``layer_sizes[n_layer]`` the output
    layer's (see memory.ik_layer_sizes); each device also reserves ``max_compute``. The first
    ``n_layer - ngl`` layers stay on the CPU; the output layer goes to a GPU only when
    ``ngl > n_layer``.
    """
    import numpy as np
    n_dev = flags.n_devices
    ngl = 999 if flags.n_gpu_layers is None or flags.n_gpu_layers < 0 else flags.n_gpu_layers
    if n_dev == 0 or ngl == 0:
        return [CPU] * (n_layer + 1)
    ts = list(flags.tensor_split or [])
    if not ts or not any(ts):
        ts = [float(b) for b in (budgets or [1] * n_dev)]
    splits = np.cumsum(np.array(ts[:n_dev], dtype=np.float32), dtype=np.float32)
    splits = (splits / splits[-1]).astype(np.float32)
    dev = [n_dev - 1] * (n_layer + 1)
    start = max(n_layer - ngl, 0)
    if n_dev > 1:
        n_last = n_layer + 1 if ngl > n_layer else n_layer
        total = max_compute * n_dev + sum(layer_sizes[start:n_last])
        last, loaded = start, np.float32(0)
        for d in range(n_dev):
            loaded = np.float32(loaded + np.float32(max_compute))
            split_size = np.float32(splits[d] * total)
            il = last
            while il < n_last:
                size = np.float32(layer_sizes[il])
                if loaded + size <= split_size:
                    dev[il] = d
                    loaded = np.float32(loaded + size)
                    il += 1
                    continue
                if loaded + size - split_size < split_size - loaded:
                    dev[il] = d
                    loaded = np.float32(loaded + size)
                    il += 1
                break
            last = il
    out = [CPU if il < start else cuda(dev[il]) for il in range(n_layer)]
    out.append(cuda(dev[n_layer]) if ngl > n_layer else CPU)
    return out


def tensor_device(name: str, layers: list[str], overrides: list[tuple[re.Pattern, str]]) -> str:
    for pattern, dev in overrides:
        if pattern.search(name):
            return dev
    m = _BLK.match(name)
    if m:
        return layers[int(m.group(1))]
    if name.startswith("token_embd"):
        return CPU
    return layers[-1]  # output, output_norm and the other output-layer tensors


@dataclass
class Assignment:
    layers: list[str]                  # device per layer, the output layer last
    tensors: dict[str, str]            # tensor name -> device
    weights: dict[str, int]            # device -> bytes of weights


def assign(tensors, n_layer: int, flags: Flags, fork: str = "llama.cpp", skip=frozenset(),
           layers: list[str] | None = None) -> Assignment:
    """Replay the loader: `tensors` are (name, nbytes) pairs; `skip` names tensors the fork never allocates.

    `layers` is the device of each layer when the caller has it (ik_llama.cpp's split needs the
    memory model: :func:`ik_layer_devices`); by default llama.cpp's rule."""
    layers = layers or layer_devices(n_layer, flags)
    compiled = []
    for pattern, dev in list(flags.overrides) + cpu_moe_overrides(flags, layers, n_layer, fork):
        compiled.append((re.compile(pattern), dev))
    where, weights = {}, {}
    for name, nbytes in tensors:
        if name in skip:
            continue
        dev = tensor_device(name, layers, compiled)
        where[name] = dev
        weights[dev] = weights.get(dev, 0) + nbytes
    return Assignment(layers, where, weights)
