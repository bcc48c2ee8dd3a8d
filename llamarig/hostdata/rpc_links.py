"""One model over several rigs: each service's ``rpc_workers`` resolved against the other rigs' ``rpc_servers``.

The only rule that reads two hosts' data. ``link_rpc(docs)`` runs once every host is validated (validate_all)
and writes, into each service that names workers, ``rpc_devices``: the devices llama.cpp will see through its
RPC backend, in the order it sees them. ``--rpc`` lists the servers in the order ``rpc_workers`` names them
(a ``HOST`` entry: that rig's servers in its declared order; a group: its rigs with servers, by name), and llama.cpp numbers each server's devices
from 0 (``RPC<i>[HOST:PORT]``, ggml-rpc.cpp's buffer type name, which ``--override-tensor`` takes) and puts
every RPC device before the local GPUs (src/llama.cpp: "add RPC servers at the front of the list"). Each
device carries what the planner needs: its memory and the worker's margin.

Both ends must run the same llama.cpp (the RPC protocol changes between versions): a worker building another
fork, URL or ref is refused.
"""

from __future__ import annotations

from llamarig.hostdata.problems import Problem
from llamarig.layout import host_port

GiB, MiB = 1 << 30, 1 << 20
SAME_BUILD = ("build_fork", "build_git_url", "build_ref")


def endpoint(server: dict) -> str:
    """Where main rigs connect to an rpc-server: its ``address``, else the address it binds."""
    return host_port(server["address"] or server["host"], server["port"])


def lent_gpus(doc: dict, server: dict) -> list[int]:
    return list(range(len(doc["gpus"]))) if server["gpus"] is None else list(server["gpus"])


def server_devices(host: str, doc: dict, server: dict) -> list[dict]:
    """The devices one rpc-server exposes, as a main rig's llama.cpp names and the planner sizes them."""
    ep = endpoint(server)
    gpus = lent_gpus(doc, server)
    if not gpus:
        return [{"worker": host, "server": server["name"], "endpoint": ep, "index": 0, "name": f"RPC0[{ep}]",
                 "kind": "cpu", "description": f"{host} CPU", "memory": int(doc["ram_gib"] * GiB), "margin": 0}]
    return [{"worker": host, "server": server["name"], "endpoint": ep, "index": k, "name": f"RPC{k}[{ep}]",
             "kind": "gpu", "description": f"{host} GPU {g} ({doc['gpus'][g]['model']})",
             "memory": int(doc["gpus"][g]["memory_gib"] * GiB), "margin": doc["gpu_margin_mib"] * MiB}
            for k, g in enumerate(gpus)]


def groups_of(entries) -> dict[str, list[str]]:
    """The inventory's groups (name -> host names), from llamarig.hostdata.inventory's entries."""
    out: dict[str, list[str]] = {}
    for e in entries:
        for g in e.groups:
            out.setdefault(g, []).append(e.name)
    return out


def link_rpc(docs: dict[str, dict], known: set[str] | None = None,
             groups: dict[str, list[str]] | None = None) -> list[Problem]:
    """Resolve every ``rpc_workers`` entry of every valid host (``docs``); ``known``: every host of the
    inventory, valid or not (a worker with bad data is reported by its own problems, not as unknown);
    ``groups``: the inventory's groups, an entry naming one standing for its hosts that declare
    rpc_servers (by name, the service's own rig left out)."""
    known = set(docs) if known is None else known
    groups = groups or {}
    problems: list[Problem] = []
    for host, doc in docs.items():
        for i, svc in enumerate(doc["services"]):
            where = f"services[{i}].rpc_workers"
            devices: list[dict] = []
            used: set[tuple[str, str]] = set()
            refs = []
            for j, ref in enumerate(svc.get("rpc_workers") or []):
                if ref not in known and "/" not in ref and ref in groups:
                    members = sorted(h for h in groups[ref] if h != host and h in docs and docs[h]["rpc_servers"])
                    if not members:
                        problems.append(Problem(host, f"{where}[{j}]", ref, "a group with a rig that declares "
                                                f"rpc_servers (its hosts: {', '.join(sorted(groups[ref]))})"))
                    refs += [(j, m) for m in members]
                else:
                    refs.append((j, ref))
            for j, ref in refs:
                worker, _, name = ref.partition("/")
                if worker == host:
                    problems.append(Problem(host, f"{where}[{j}]", ref, "another rig (a service uses its own GPUs "
                                                                        "directly, not through RPC)"))
                    continue
                if worker not in docs:
                    if worker not in known:
                        with_servers = sorted(h for h, d in docs.items() if d["rpc_servers"] and h != host)
                        problems.append(Problem(host, f"{where}[{j}]", ref, "a host of this inventory that declares "
                                                f"rpc_servers (those that do: {', '.join(with_servers) or 'none'})"))
                    continue
                wdoc = docs[worker]
                servers = [s for s in wdoc["rpc_servers"] if not name or s["name"] == name]
                if not servers:
                    names = ", ".join(s["name"] for s in wdoc["rpc_servers"]) or "none"
                    problems.append(Problem(host, f"{where}[{j}]", ref, f"an RPC server {worker} declares "
                                                                        f"(its rpc_servers: {names})"))
                    continue
                differ = [k for k in SAME_BUILD if wdoc[k] != doc[k]]
                if differ:
                    problems.append(Problem(host, f"{where}[{j}]", ref, "a worker building the same llama.cpp "
                                            "(the RPC protocol changes between versions): "
                                            + "; ".join(f"{k} is {wdoc[k]!r} on {worker}, {doc[k]!r} here" for k in differ)))
                    continue
                for server in servers:
                    if (worker, server["name"]) in used:
                        problems.append(Problem(host, f"{where}[{j}]", ref, f"each RPC server once ({worker}/"
                                                                            f"{server['name']} is named twice)"))
                        continue
                    used.add((worker, server["name"]))
                    devices += server_devices(worker, wdoc, server)
            if svc.get("rpc_workers"):
                svc["rpc_devices"] = devices
                problems += _placement_names(host, doc, i, svc, devices)
    return problems


def _placement_names(host: str, doc: dict, i: int, svc: dict, devices: list[dict]) -> list[Problem]:
    """A hand-written placement over RPC devices names devices the workers have, one proportion each."""
    out = []
    local = len(doc["gpus"]) if svc["gpus"] is None else len(svc["gpus"])
    names = ["CPU"] + [d["name"] for d in devices] + [f"CUDA{k}" for k in range(local)]
    split = svc.get("tensor_split")
    if split is not None and len(split) != len(devices) + local:
        out.append(Problem(host, f"services[{i}].tensor_split", split,
                           f"{len(devices) + local} proportion(s), one per device in llama.cpp's order: "
                           + ", ".join(names[1:])))
    for j, pair in enumerate(svc.get("tensor_overrides") or []):
        if pair[1] not in names:
            out.append(Problem(host, f"services[{i}].tensor_overrides[{j}][1]", pair[1],
                               "a device of this service: " + ", ".join(names)))
    return out


LINKED = "rpc_devices"  # the key link_rpc writes into a service: no host data, never validated again


def unlinked(doc: dict) -> tuple[dict, dict[str, list]]:
    """(a validated doc without what link_rpc wrote, to validate it again; what it wrote, by service name)."""
    out = dict(doc)
    links = {s["name"]: s[LINKED] for s in doc.get("services") or [] if isinstance(s, dict) and LINKED in s}
    if links:
        out["services"] = [{k: v for k, v in s.items() if k != LINKED} if isinstance(s, dict) else s
                           for s in doc["services"]]
    return out, links


def relink(doc: dict, links: dict[str, list]) -> dict:
    for svc in doc.get("services") or []:
        if svc.get("name") in links and svc.get("rpc_workers"):
            svc[LINKED] = links[svc["name"]]
    return doc


def users(docs: dict[str, dict], worker: str) -> list[tuple[str, str]]:
    """(host, service) of every service that uses one of ``worker``'s RPC servers."""
    return [(h, s["name"]) for h, d in docs.items() for s in d["services"]
            if any(dev["worker"] == worker for dev in s.get("rpc_devices") or [])]
