"""A service's RPC devices (``rpc_devices``, written by llamarig/hostdata/rpc_links.py) as the planner and
llama-server see them.

The planner numbers a service's devices 0..n-1 and calls them ``CUDA<i>`` (``planner.placement.cuda``):
here device i is the i-th RPC device when i is below the number of RPC devices, else local GPU
i - n_rpc, the order llama.cpp gives its devices (RPC servers first). ``names`` turns the planner's
names into llama.cpp's (``RPC<k>[HOST:PORT]``, ``CUDA<j>``) for the argv; ``internal`` turns a
hand-written ``tensor_overrides`` device back for the memory check.
"""

from __future__ import annotations

from llamarig import layout
from llamarig.planner.memory import DEFAULT_HOST_MARGIN
from llamarig.planner.placement import CPU, cuda


def devices(service: dict) -> list[dict]:
    return list(service.get("rpc_devices") or [])


def endpoints(service: dict) -> list[str]:
    """``--rpc``'s servers, each once, in the order the service names them."""
    return list(dict.fromkeys(d["endpoint"] for d in devices(service)))


def rpc_arg(service: dict) -> list[str]:
    eps = endpoints(service)
    return ["--rpc", ",".join(eps)] if eps else []


def names(service: dict, n_local: int) -> list[str]:
    """llama.cpp's name of each of the service's devices, in the planner's (and llama.cpp's) order."""
    return [d["name"] for d in devices(service)] + [cuda(j) for j in range(n_local)]


def budgets(service: dict, margin: int) -> list[int]:
    """The planner's byte budget of each RPC device, such that the planner's own ``margin`` (the main rig's)
    taken off leaves the worker's: a lent GPU keeps its rig's gpu_margin_mib, a lent CPU the host margin."""
    out = []
    for d in devices(service):
        keep = d["margin"] if d["kind"] == "gpu" else DEFAULT_HOST_MARGIN
        out.append(max(d["memory"] - keep + margin, 0))
    return out


def to_llama(device: str, service: dict) -> str:
    """The planner's ``CUDA<i>`` as llama.cpp names that device; CPU and other words unchanged."""
    n_rpc = len(devices(service))
    if not n_rpc or not device.startswith("CUDA") or not device[4:].isdigit():
        return device
    i = int(device[4:])
    return devices(service)[i]["name"] if i < n_rpc else cuda(i - n_rpc)


def to_planner(device: str, service: dict) -> str:
    """A device as written in ``tensor_overrides`` (llama.cpp's names) as the planner numbers it."""
    n_rpc = len(devices(service))
    if not n_rpc or device == CPU:
        return device
    for i, d in enumerate(devices(service)):
        if d["name"] == device:
            return cuda(i)
    if device.startswith("CUDA") and device[4:].isdigit():
        return cuda(int(device[4:]) + n_rpc)
    return device


def describe(service: dict) -> str:
    """One line for people: which RPC devices, where."""
    return ", ".join(f"{d['name']} ({d['description']})" for d in devices(service))


def listen_endpoint(listen: tuple[str, int]) -> str:
    """Where an rpc-server bound to ``listen`` (address, port) answers on its own rig: a wildcard on loopback."""
    address, port = listen
    if address in ("0.0.0.0", "::", "[::]"):
        address = "127.0.0.1" if address == "0.0.0.0" else "::1"
    return layout.host_port(address, port)
