"""The placement planner: fit a model onto a rig's GPUs and RAM, offline and deterministically.

``plan(model, gpus, ram, settings)`` keeps every layer's attention, norms, router, shared
experts, dense FFN and KV cache on the GPUs (contiguous layer ranges, in proportion to
what each GPU has left after its compute buffer), then gives whole layers' routed experts
to the GPUs device by device, first to the GPU that holds the layer, then to any GPU with
room, and sends the rest to the CPU with a catch-all override last. Only when even the
layers without their experts do not fit do the first layers stay on the CPU entirely.

The result carries the flags (``-ngl``, ``-ts``, the ordered ``-ot`` list) and a table per
device computed from the planner's own per-layer bookkeeping. ``evaluate(model, flags, ...)``
computes the same table by replaying the loaders' rules on the tensor names
(llamarig/placement.py): it checks placements written by hand, and the tests check that the
two agree on every plan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from llamarig.planner import memory
from llamarig.planner import placement
from llamarig.planner.gguf import ModelInfo
from llamarig.planner.memory import GiB, MiB, Settings
from llamarig.planner.placement import CPU, EXPS_REGEX, Flags, cuda


class PlanError(Exception):
    pass


@dataclass
class DeviceRow:
    name: str
    budget: int
    weights: int
    kv: int
    compute: int
    total: int
    runtime: int = 0       # CUDA context, cuBLAS workspace, pools (memory.runtime): in total, in no buffer


@dataclass
class Plan:
    fits: bool
    reason: str
    devices: list[DeviceRow]
    host: dict                        # weights, total, budget (bytes; budget None when RAM unknown)
    flags: Flags
    layers: list[str]                 # device of each layer, the output layer last
    fork: str = "llama.cpp"
    notes: list[str] = field(default_factory=list)

    def to_json(self, args: list[str]) -> dict:
        return {"fits": self.fits, "reason": self.reason,
                "devices": [asdict(d) for d in self.devices],
                "host": {"weights": self.host["weights"], "total": self.host["total"]},
                "args": args}


def gib(n: int | float) -> str:
    return f"{n / GiB:.2f} GiB"


# ---------------------------------------------------------------- evaluating flags

def evaluate(model: ModelInfo, flags: Flags, gpus: list[int], ram: int | None, s: Settings,
             margin: int = memory.DEFAULT_MARGIN, host_margin: int = memory.DEFAULT_HOST_MARGIN,
             split_mode: str | None = None) -> Plan:
    """The table for placement flags written by hand (or planned): the loaders' rules replayed."""
    c = memory.layer_costs(model, s)
    n = model.n_layer
    layers = _layers_for(model, flags, s, c, gpus, margin)
    skip = memory.skipped(model)
    over = list(flags.overrides) + placement.cpu_moe_overrides(flags, layers, n, s.fork, model.n_nextn, split_mode)
    full = Flags(flags.n_devices, flags.n_gpu_layers, flags.tensor_split, over)
    a = placement.assign([(t.name, t.nbytes) for t in model.tensors], n, full, s.fork, skip, layers)
    names = {t.name for t in model.tensors}
    if "output.weight" not in names and "token_embd.weight" in names and layers[n] != CPU:
        # tied embeddings: the loader makes a second copy of token_embd on the output layer's device
        emb = next(t for t in model.tensors if t.name == "token_embd.weight")
        a.weights[layers[n]] = a.weights.get(layers[n], 0) + emb.nbytes
    cpu_expert_layers = sorted({t.layer for t in model.tensors
                                if t.layer is not None and t.name not in skip and memory.is_expert(t.name)
                                and a.tensors[t.name] == CPU})
    rows = []
    rt = memory.runtime(model, s)
    for d in range(len(gpus)):
        name = cuda(d)
        mine = [il for il in range(n) if layers[il] == name]
        kv = sum(c.gpu_kv(il) for il in mine)
        comp = memory.device_compute(model, s, c, mine, layers[n] == name, cpu_expert_layers)
        w = a.weights.get(name, 0)
        rows.append(DeviceRow(name, gpus[d] - margin, w, kv, comp, w + kv + comp + rt, rt))
    cpu_layers = [il for il in range(n) if layers[il] == CPU]
    host_w = a.weights.get(CPU, 0)
    host_kv = sum(c.kv) if c.kv_on_host else sum(c.kv[il] for il in cpu_layers)
    host_total = host_w + host_kv + memory.logits(model, s) + memory.host_caches(model, s, c)
    if cpu_layers:
        host_total += max(c.compute[il] for il in cpu_layers)
    return _finish(rows, host_w, host_total, ram, host_margin, flags, layers, s.fork)


def _layers_for(model, flags, s, c, gpus, margin):
    n = model.n_layer
    if s.fork == "ik_llama.cpp":
        sizes, max_compute = memory.ik_layer_sizes(model, s, c)
        return placement.ik_layer_devices(n, flags, sizes, max_compute, [g - margin for g in gpus])
    if flags.tensor_split is None and len(gpus) > 1:  # llama.cpp splits by free memory when -ts is unset
        flags = Flags(flags.n_devices, flags.n_gpu_layers, [float(g) for g in gpus], flags.overrides)
    return placement.layer_devices(n, flags)


def _finish(rows, host_w, host_total, ram, host_margin, flags, layers, fork) -> Plan:
    host_budget = None if ram is None else ram - host_margin
    over = [r for r in rows if r.total > r.budget]
    reasons = [f"{r.name} needs {gib(r.total)} of its {gib(r.budget)} (weights {gib(r.weights)}, "
               f"KV {gib(r.kv)}, compute {gib(r.compute)})" for r in over]
    if host_budget is not None and host_total > host_budget:
        reasons.append(f"host RAM: needs {gib(host_total)} of {gib(host_budget)} (weights {gib(host_w)})")
    return Plan(not reasons, "; ".join(reasons), rows,
                {"weights": host_w, "total": host_total, "budget": host_budget}, flags, layers, fork)


# ---------------------------------------------------------------- planning

def _split(light: list[int], caps: list[int]) -> list[list[int]] | None:
    """Contiguous ranges of `light` (indices) per device, each within its cap, in proportion to the caps."""
    total, cap_sum = sum(light), sum(max(c, 0) for c in caps)
    if cap_sum <= 0:
        return None
    groups: list[list[int]] = [[] for _ in caps]
    i, acc, cum_target = 0, 0, 0.0
    for d, cap in enumerate(caps):
        cum_target += max(cap, 0) / cap_sum * total
        used = 0
        while i < len(light):
            last = d == len(caps) - 1
            if used + light[i] > cap:
                break
            if not last and acc + light[i] / 2 > cum_target:
                break
            groups[d].append(i)
            used += light[i]
            acc += light[i]
            i += 1
    if i < len(light):
        return _greedy(light, caps)
    return groups


def _greedy(light, caps):
    groups, i = [[] for _ in caps], 0
    for d, cap in enumerate(caps):
        used = 0
        while i < len(light) and used + light[i] <= cap:
            groups[d].append(i)
            used += light[i]
            i += 1
    return groups if i == len(light) else None


def _alternation(layers: list[int]) -> str:
    ids = "|".join(str(i) for i in sorted(layers))
    return rf"blk\.({ids})" if len(layers) > 1 else rf"blk\.{ids}"


def plan(model: ModelInfo, gpus: list[int], ram: int | None, s: Settings,
         margin: int = memory.DEFAULT_MARGIN, host_margin: int = memory.DEFAULT_HOST_MARGIN) -> Plan:
    """Plan a placement of `model` on GPUs of `gpus` bytes each and `ram` bytes of system RAM."""
    c = memory.layer_costs(model, s)
    n, D = model.n_layer, len(gpus)
    trunk = n - model.n_nextn
    budgets = [g - margin - memory.runtime(model, s) for g in gpus]
    if D == 0:
        flags = Flags(0, 0)
        return evaluate(model, flags, gpus, ram, s, margin, host_margin)
    cmax = max(c.compute[:trunk] or [0])
    smax = max(c.scratch[:trunk] or [0]) + memory.kq_mask(model, s)
    logit = memory.logits(model, s)
    out_compute = max(cmax + smax, memory.ik_output(model, s)) if s.fork == "ik_llama.cpp" else cmax + smax + logit
    ik = s.fork == "ik_llama.cpp"
    light = [c.base[il] + c.gpu_kv(il) for il in range(n)]
    copy = 0
    for _attempt in range(4):
        result = _place(model, s, c, budgets, light, cmax + smax + copy, out_compute + copy, ik)
        if result is None:
            break
        layer_dev, gpu_experts, first_gpu = result
        cpu_layers = [il for il in range(trunk) if c.experts[il] and il not in gpu_experts]
        need = memory.offload_copy(model, cpu_layers, s)
        if need <= copy:
            break
        copy = need
    if result is None:
        # even the layers without their experts do not fit: report the all-experts-on-CPU placement
        flags = Flags(D, n + 1 if not ik else 999, None,
                      [(EXPS_REGEX, CPU)] if any(c.experts) else [])
        p = evaluate(model, flags, gpus, ram, s, margin, host_margin)
        p.fits = False
        p.reason = ("the layers without their routed experts (attention, KV cache, shared experts) and the "
                    "compute buffers do not fit the GPUs: " + (p.reason or "no room left"))
        return p
    flags = _flags(model, s, c, layer_dev, gpu_experts, first_gpu, D)
    p = evaluate(model, flags, gpus, ram, s, margin, host_margin)
    mine = _bookkeeping(model, s, c, p.layers, gpu_experts, gpus, margin)
    for row, (w, kv) in zip(p.devices, mine):
        if (row.weights, row.kv) != (w, kv):  # the flags must mean what the plan intended
            raise PlanError(f"{row.name}: flags place {row.weights} B of weights and {row.kv} B of KV, "
                            f"the plan {w} and {kv}")
    return p


def _place(model, s, c, budgets, light, dev_compute, out_compute, ik):
    """Layer ranges per device, then whole layers' experts; None when nothing fits."""
    n, D = model.n_layer, len(budgets)
    for first_gpu in range(0, n + 1):
        caps = [b - dev_compute for b in budgets]
        caps[-1] -= c.output + (out_compute - dev_compute)
        idx = list(range(first_gpu, n))
        groups = _split([light[il] for il in idx], caps)
        if groups is None:
            continue
        layer_dev = {idx[i]: d for d, g in enumerate(groups) for i in g}
        free = [caps[d] - sum(light[idx[i]] for i in groups[d]) for d in range(D)]
        gpu_experts: dict[int, int] = {}
        for d in range(D):
            for i in groups[d]:
                il = idx[i]
                if c.experts[il] and c.experts[il] <= free[d]:
                    gpu_experts[il] = d
                    free[d] -= c.experts[il]
        for il in idx:  # room left anywhere: whole layers' experts on another GPU
            if c.experts[il] and il not in gpu_experts:
                d = max(range(D), key=lambda k: free[k])
                if c.experts[il] <= free[d]:
                    gpu_experts[il] = d
                    free[d] -= c.experts[il]
        return layer_dev, gpu_experts, first_gpu
    return None


def _flags(model, s, c, layer_dev, gpu_experts, first_gpu, D) -> Flags:
    n = model.n_layer
    ik = s.fork == "ik_llama.cpp"
    per_dev = [[il for il in range(n) if layer_dev.get(il) == d] for d in range(D)]
    if ik:
        ngl = 999 if first_gpu == 0 else n - first_gpu
        sizes, max_compute = memory.ik_layer_sizes(model, s, c)
        ts = [round((max_compute + sum(sizes[il] for il in per_dev[d])
                     + (sizes[n] if d == D - 1 and ngl > n else 0)) / MiB) for d in range(D)]
    else:
        ngl = n + 1 - first_gpu
        ts = [len(per_dev[d]) + (1 if d == D - 1 else 0) for d in range(D)]
    overrides = []
    need_ot = any(c.experts[il] and il not in gpu_experts for il in range(n - model.n_nextn)) or \
        any(layer_dev.get(il) != d for il, d in gpu_experts.items())
    if need_ot:
        for d in range(D):
            ls = [il for il, dd in sorted(gpu_experts.items()) if dd == d]
            if ls:
                overrides.append((_alternation(ls) + EXPS_REGEX, cuda(d)))
        overrides.append((EXPS_REGEX, CPU))
    return Flags(D, ngl, [float(x) for x in ts] if D > 1 else None, overrides)


def _bookkeeping(model, s, c, layers, gpu_experts, gpus, margin) -> list[tuple[int, int]]:
    """Per device (weights, KV) from per-layer sums: the plan's own account, checked against the flags."""
    n, out = model.n_layer, []
    for d in range(len(gpus)):
        name = cuda(d)
        mine = [il for il in range(n) if layers[il] == name]
        w = sum(c.base[il] for il in mine) + sum(c.experts[il] for il, dd in gpu_experts.items() if dd == d)
        w += c.output if layers[n] == name else 0
        out.append((w, sum(c.gpu_kv(il) for il in mine)))
    return out


def describe(p: Plan) -> str:
    lines = [f"{'device':8} {'budget':>11} {'weights':>11} {'kv':>11} {'compute':>11} {'runtime':>11} {'total':>11}  free"]
    for r in p.devices:
        lines.append(f"{r.name:8} {gib(r.budget):>11} {gib(r.weights):>11} {gib(r.kv):>11} "
                     f"{gib(r.compute):>11} {gib(r.runtime):>11} {gib(r.total):>11}  {gib(r.budget - r.total)}")
    hb = p.host["budget"]
    lines.append(f"{'host':8} {gib(hb) if hb is not None else 'unknown':>11} {gib(p.host['weights']):>11} "
                 f"{'':>11} {'':>11} {'':>11} {gib(p.host['total']):>11}" + (f"  {gib(hb - p.host['total'])}" if hb is not None else ""))
    gpu_layers = sum(1 for x in p.layers[:-1] if x != CPU)
    lines.append(f"layers on GPUs: {gpu_layers}/{len(p.layers) - 1}, output layer on {p.layers[-1]}")
    lines.append("fits" if p.fits else f"does not fit: {p.reason}")
    return "\n".join(lines)
