"""Decide which nvidia-smi commands bring a rig's GPUs to their declared power state."""

from __future__ import annotations


def _same_model(declared: str, reported: str) -> bool:
    d, r = declared.lower().strip(), reported.lower().strip()
    return d == r or r.endswith(d) or d.endswith(r)


def power_changes(declared: list[dict], gpus: list[dict], limits: dict[int, float],
                  persistence: bool) -> tuple[list[str], list[str]]:
    """(commands, problems): shell commands to run, or the reasons nothing may run.

    ``gpus`` is what nvidia-smi reports (see tasks/power.py's GpuState). The
    declared GPUs must match it by count, model and memory (within 5%); limits
    must lie within each GPU's minimum and maximum.
    """
    problems: list[str] = []
    if len(gpus) != len(declared):
        problems.append(f"the rig declares {len(declared)} GPU(s), nvidia-smi reports {len(gpus)}")
    for want, have in zip(declared, gpus):
        if not _same_model(want["model"], have["name"]):
            problems.append(f"GPU {have['index']} is {have['name']}, declared {want['model']}")
        if have["memory_mib"] and abs(have["memory_mib"] / 1024 - want["memory_gib"]) > 0.05 * want["memory_gib"]:
            problems.append(f"GPU {have['index']} has {have['memory_mib'] / 1024:.1f} GiB, declared {want['memory_gib']} GiB")
    by_index = {g["index"]: g for g in gpus}
    for index, watts in sorted(limits.items()):
        gpu = by_index.get(index)
        if gpu is None:
            problems.append(f"power limit for GPU {index}, which nvidia-smi does not report")
            continue
        low, high = gpu["power_min"], gpu["power_max"]
        if low is not None and high is not None and not low <= watts <= high:
            problems.append(f"power limit {watts:g} W for GPU {index} ({gpu['name']}) is outside its range {low:g}-{high:g} W")
    if problems:
        return [], problems

    commands = []
    for gpu in gpus:
        i = gpu["index"]
        if persistence and not gpu["persistence"]:
            commands.append(f"nvidia-smi -i {i} -pm 1")
        watts = limits.get(i)
        if watts is not None and (gpu["power_limit"] is None or abs(gpu["power_limit"] - watts) >= 0.5):
            # Trust the read-back, not the exit code: some GPUs "treat as warning" and change nothing.
            commands.append(
                f"nvidia-smi -i {i} -pl {watts:g} && "
                f"got=$(nvidia-smi -i {i} --query-gpu=power.limit --format=csv,noheader,nounits) && "
                f"awk -v got=\"$got\" -v want={watts:g} 'BEGIN {{ d = got - want; if (d < 0) d = -d; exit (d < 0.5) ? 0 : 1 }}' || "
                f"{{ echo \"llamarig: GPU {i} power limit reads back as $got W, wanted {watts:g} W\" >&2; exit 1; }}"
            )
    return commands, []


def declared_limits(doc: dict) -> dict[int, float]:
    """Watts by GPU index: ``power_limits_w`` per GPU over ``power_limit_w`` for all; GPUs with neither left out."""
    limits = {i: doc["power_limits_w"].get(i, doc["power_limit_w"]) for i in range(len(doc["gpus"]))}
    return {i: float(w) for i, w in limits.items() if w is not None}


def boot_commands(limits: dict[int, float], persistence: bool, n_gpus: int) -> list[str]:
    """ExecStart= lines of the boot-time unit: every declared setting, unconditionally, GPU by GPU."""
    commands = []
    for index in range(n_gpus):
        if persistence:
            commands.append(f"nvidia-smi -i {index} -pm 1")
        if index in limits:
            commands.append(f"nvidia-smi -i {index} -pl {limits[index]:g}")
    return commands
