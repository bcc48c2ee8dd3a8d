"""Facts about a rig's GPUs and CUDA toolkit: what nvidia-smi reports, and where nvcc is."""

from __future__ import annotations

from pyinfra.api import FactBase

from llamarig.lookups.rigfacts import NVCC_LOOKUP

QUERY = ("index,name,memory.total,compute_cap,power.limit,power.default_limit,"
         "power.min_limit,power.max_limit,persistence_mode")


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class GpuState(FactBase):
    """The rig's GPUs as nvidia-smi reports them: one dict per GPU, in index order (None without nvidia-smi)."""

    requires_command = "nvidia-smi"

    def command(self):
        return f"nvidia-smi --query-gpu={QUERY} --format=csv,noheader,nounits"

    def process(self, output):
        gpus = []
        for line in output:
            f = [part.strip() for part in line.split(",")]
            if not line.strip() or len(f) < 9 or not f[0].isdigit():
                continue
            gpus.append({
                "index": int(f[0]), "name": f[1], "memory_mib": _num(f[2]), "compute_cap": f[3],
                "power_limit": _num(f[4]), "power_default": _num(f[5]), "power_min": _num(f[6]),
                "power_max": _num(f[7]), "persistence": f[8].lower() == "enabled",
            })
        return gpus


class NvccPath(FactBase):
    """Path of nvcc on the rig, or None."""

    def command(self):
        return NVCC_LOOKUP

    def process(self, output):
        lines = [line for line in output if line.strip()]
        return lines[0].strip() if lines else None
