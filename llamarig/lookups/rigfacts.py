"""What decides a rig's build, read on the rig over SSH outside pyinfra (``llamarig lock``): nvcc and compute capability."""

from __future__ import annotations

from llamarig.lookups.rigssh import ssh_rig
# How a rig's nvcc is found (prints its path, or nothing): the deploy's fact and `llamarig lock` both ask this.
NVCC_LOOKUP = "command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null || true"
COMPUTE_CAPS = "nvidia-smi --query-gpu=compute_cap --format=csv,noheader"


class RigFactsError(Exception):
    pass


def read_build_facts(host: str, data: dict) -> tuple[str | None, list[str]]:
    """(nvcc's path or None, the GPUs' compute capabilities) as the deploy's facts would read them."""
    try:
        with ssh_rig(host, data) as run:
            _, nvcc, _ = run(NVCC_LOOKUP, 30)
            if not nvcc.strip():
                return None, []
            status, caps, err = run(COMPUTE_CAPS, 30)
    except Exception as exc:  # noqa: BLE001 - any failure to reach the rig is this rig's error
        raise RigFactsError(f"{host}: could not reach the rig to read nvcc and the GPUs' compute capability, "
                            f"which decide its build: {type(exc).__name__}: {exc}") from None
    if status != 0:
        raise RigFactsError(f"{host}: {COMPUTE_CAPS} failed on the rig: {err.strip()[-200:]}")
    return nvcc.strip().splitlines()[0], [c.strip() for c in caps.splitlines() if c.strip()]
