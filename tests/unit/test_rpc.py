"""One model over several rigs: rpc_workers linked to the workers' rpc_servers, planned across every rig's
devices in llama.cpp's order, rendered as llama.cpp names them, replayed on the tensor names; the workers'
hardened rpc-server units; their build; the tensor cache's pruning."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamarig.hostdata.inventory import load_inventory
from llamarig.hostdata.validate import validate_all
from llamarig.planner.gguf import read_model
from llamarig.planner.memory import GiB
from llamarig.planner.placement import Flags, assign
from llamarig.planner.plan import evaluate
from llamarig.release import rpc
from llamarig.release.assemble import RigFacts
from llamarig.release.build import build_plan
from llamarig.release.flags import server_args
from llamarig.release.placements import plan_rig, settings
from testbed import synth
from tests.unit.helpers import release_of, rig
from tests.unit.test_hardening import LIMIT, exposure

ROOT = Path(__file__).resolve().parents[2]
W = {"ram_gib": 64, "services": [], "rpc_servers": [{"name": "office", "host": "10.10.0.2"}]}


def linked(main: dict, worker: dict = W, extra: list | None = None) -> dict:
    docs, problems = validate_all([("garage", rig(**main)), ("office", rig(**worker)), *(extra or [])])
    assert problems == [], [str(p) for p in problems]
    return docs


@pytest.fixture(scope="module")
def moe(tmp_path_factory):
    path = tmp_path_factory.mktemp("rpc") / "moe.gguf"
    synth.write_model(str(path), synth.qwen3moe())  # 32 GB of Q8_0: more than one 24 GiB card holds
    return read_model(str(path))


def svc(**kw) -> dict:
    return {"name": "chat", "model": "gemma", "port": 8080, "placement": "auto", "ctx_size": 32768, **kw}


def test_workers_devices_come_first_in_the_order_the_service_names_them():
    two = {"ram_gib": 32, "services": [], "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}],
           "rpc_servers": [{"name": "a", "host": "10.10.0.3", "port": 50060, "gpus": []},
                           {"name": "b", "host": "10.10.0.3", "port": 50061}]}
    docs = linked({"services": [svc(rpc_workers=["den/b", "office", "den/a"])]}, extra=[("den", rig(**two))])
    devices = docs["garage"]["services"][0]["rpc_devices"]
    assert [d["name"] for d in devices] == ["RPC0[10.10.0.3:50061]", "RPC0[10.10.0.2:50052]", "RPC1[10.10.0.2:50052]",
                                            "RPC0[10.10.0.3:50060]"]
    assert [d["kind"] for d in devices] == ["gpu", "gpu", "gpu", "cpu"]
    assert devices[3]["memory"] == 32 * GiB and devices[1]["memory"] == 24 * GiB
    service = docs["garage"]["services"][0]
    assert rpc.endpoints(service) == ["10.10.0.3:50061", "10.10.0.2:50052", "10.10.0.3:50060"]
    assert rpc.names(service, 2)[-2:] == ["CUDA0", "CUDA1"]


def test_the_plan_spans_workers_and_local_gpus_and_replays_on_the_tensor_names(moe):
    docs = linked({"gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}], "ram_gib": 100,
                   "services": [svc()]})
    base = docs["garage"]
    alone = plan_rig(base, {"gemma": moe})["chat"].plan
    small = dict(W, gpus=[{"model": "NVIDIA GeForce RTX 3060", "memory_gib": 6}] * 2)  # 24 + 12 GiB: experts to RAM too
    docs = linked({"gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}], "ram_gib": 100,
                   "services": [svc(rpc_workers=["office"])]}, small)
    doc = docs["garage"]
    service = doc["services"][0]
    p = plan_rig(doc, {"gemma": moe})["chat"].plan
    assert p.fits and len(p.devices) == 3  # the worker's two GPUs, then the local one
    # more of the model on GPUs than the rig alone holds: fewer expert bytes left in the main rig's RAM
    assert p.host["weights"] < alone.host["weights"]
    args = server_args(service, "/m.gguf", "llama.cpp", p.flags)
    assert args[:4] == ["--model", "/m.gguf", "--rpc", "10.10.0.2:50052"]   # before every --override-tensor
    assert len(args[args.index("--tensor-split") + 1].split(",")) == 3
    overrides = [args[i + 1].rsplit("=", 1) for i, a in enumerate(args) if a == "--override-tensor"]
    named = {device for _pattern, device in overrides}
    assert named <= {"CPU", "CUDA0", "RPC0[10.10.0.2:50052]", "RPC1[10.10.0.2:50052]"} and "CPU" in named
    # the rendered flags, read back as llama.cpp would, give the planned bytes on every device
    flags = Flags(3, int(args[args.index("--n-gpu-layers") + 1]),
                  [float(x) for x in args[args.index("--tensor-split") + 1].split(",")],
                  [(pattern, rpc.to_planner(device, service)) for pattern, device in overrides])
    again = evaluate(moe, flags, rpc.budgets(service, doc["gpu_margin_mib"] << 20) + [24 * GiB], 100 * GiB,
                     settings(doc, service, moe), doc["gpu_margin_mib"] << 20)
    assert [d.weights for d in again.devices] == [d.weights for d in p.devices]
    placed = assign([(t.name, t.nbytes) for t in moe.tensors], moe.n_layer, flags)
    names = rpc.names(service, 1)
    on = {names[int(d[4:])] if d.startswith("CUDA") else d for d in placed.tensors.values()}
    assert on >= {"RPC0[10.10.0.2:50052]", "RPC1[10.10.0.2:50052]", "CUDA0"}
    assert placed.tensors["output.weight"] == "CUDA2"  # the output layer on the last device: the main rig's GPU


def test_a_hand_written_placement_over_rpc_devices_is_checked_with_their_names(moe):
    main = {"gpus": [], "ram_gib": 100, "services": [{
        "name": "chat", "model": "gemma", "port": 8080, "ctx_size": 8192, "n_gpu_layers": 99,
        "tensor_split": [1, 1], "rpc_workers": ["office"],
        "tensor_overrides": [["blk\\.(1|2)\\.ffn_.*_exps", "RPC1[10.10.0.2:50052]"], ["exps", "CPU"]]}]}
    doc = linked(main)["garage"]
    p = plan_rig(doc, {"gemma": moe})["chat"].plan
    assert p.fits and len(p.devices) == 2
    experts = sum(t.nbytes for t in moe.tensors if t.layer in (1, 2) and "_exps" in t.name)
    assert p.devices[1].weights >= experts > 0
    wrong = copy.deepcopy(main)
    wrong["services"][0]["tensor_overrides"][0][1] = "RPC2[10.10.0.2:50052]"
    wrong["services"][0]["tensor_split"] = [1]
    _docs, problems = validate_all([("garage", rig(**wrong)), ("office", rig(**W))])
    assert [str(x) for x in problems] == [
        "garage: services[0].tensor_split = [1]: expected 2 proportion(s), one per device in llama.cpp's order: "
        "RPC0[10.10.0.2:50052], RPC1[10.10.0.2:50052]",
        "garage: services[0].tensor_overrides[0][1] = 'RPC2[10.10.0.2:50052]': expected a device of this service: "
        "CPU, RPC0[10.10.0.2:50052], RPC1[10.10.0.2:50052]"]


def test_the_example_inventory_plans_glm_over_six_gpus():
    entries = load_inventory(ROOT / "inventory/rpc.py", cwd=ROOT)
    docs, problems = validate_all([(e.name, e.data) for e in entries])
    assert not problems
    devices = docs["garage"]["services"][0]["rpc_devices"]
    assert [d["name"] for d in devices] == ["RPC0[10.10.0.2:50052]", "RPC1[10.10.0.2:50052]"]


def test_the_worker_unit_binds_the_declared_address_lends_its_gpus_and_is_hardened(tmp_path):
    worker = rig(ram_gib=64, services=[], rpc_servers=[{"name": "office", "host": "10.10.0.2", "gpus": [1],
                                                         "threads": 6, "cache_max_gib": 2}])
    docs, problems = validate_all([("office", worker)])
    assert not problems
    release = release_of("office", docs["office"], RigFacts(True, ("86",)))
    u = release.rpc_units["llamarig-rpc-office.service"]
    assert list(u.argv) == ["--host", "10.10.0.2", "--port", "50052", "--device", "CUDA0", "--threads", "6", "--cache"]
    assert "0.0.0.0" not in u.text and "CUDA_VISIBLE_DEVICES=1" in u.text
    assert re.search(r"^ExecStart=\S+/bin/rpc-server --host 10\.10\.0\.2 ", u.text, re.M)
    assert re.search(r"^ExecStartPre=python3 \S+llamarig-rpc-cache\.py /var/cache/llamarig/rpc-office/rpc 2147483648$",
                     u.text, re.M)
    assert "LLAMA_CACHE=/var/cache/llamarig/rpc-office" in u.text
    assert "llamarig-rpc-office.service" in release.unit_texts()  # locked like the service units
    assert exposure(tmp_path, u.unit, u.text) <= LIMIT
    cpu = rig(gpus=[], ram_gib=32, services=[], rpc_servers=[{"name": "cpu", "host": "10.10.0.3", "cache": False}])
    docs, problems = validate_all([("den", cpu)])
    text = release_of("den", docs["den"]).rpc_units["llamarig-rpc-cpu.service"].text
    assert "--device CPU" in text and "--cache" not in text and "ExecStartPre" not in text
    assert "PrivateDevices=yes" in text and exposure(tmp_path, "llamarig-rpc-cpu.service", text) <= LIMIT


def test_the_main_unit_names_its_rpc_devices_and_the_link_it_needs():
    doc = linked({"services": [{"name": "chat", "model": "gemma", "port": 8080, "rpc_workers": ["office"]}]})["garage"]
    text = release_of("garage", doc).units["llamarig-chat.service"].text
    assert "# RPC0[10.10.0.2:50052] (office GPU 0 (NVIDIA GeForce RTX 3090))" in text
    assert re.search(r"^ExecStart=\S+ --model \S+ --rpc 10\.10\.0\.2:50052", text, re.M)


def test_a_worker_and_its_main_rig_are_one_build_with_rpc():
    docs = linked({"services": [{"name": "chat", "model": "gemma", "port": 8080, "rpc_workers": ["office"]}]})
    plans = [build_plan(docs[h], "a" * 40, cuda=True, archs=["86"]) for h in ("garage", "office")]
    assert plans[0]["key"] == plans[1]["key"]
    assert "-DGGML_RPC=ON" in plans[0]["cmake_args"] and "rpc-server|ggml-rpc-server" in plans[0]["targets"]
    alone = build_plan(rig(), "a" * 40, cuda=True, archs=["86"])
    assert "-DGGML_RPC=ON" not in alone["cmake_args"] and not any("rpc" in t for t in alone["targets"])


def test_the_cache_is_pruned_least_recently_used_first(tmp_path):
    cache = tmp_path / "rpc"
    cache.mkdir()
    now = time.time()
    for i in range(5):
        f = cache / f"tensor{i}"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (now - 1000 * (5 - i), now - 1000 * (5 - i)))  # tensor0 used longest ago
    script = ROOT / "rig_programs/llamarig-rpc-cache.py"
    done = subprocess.run([sys.executable, str(script), str(cache), "2500"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in cache.iterdir()) == ["tensor3", "tensor4"]
    assert "removed 3 (3000 bytes)" in done.stdout
    done = subprocess.run([sys.executable, str(script), str(cache), "1000000"], capture_output=True, text=True)
    assert sorted(p.name for p in cache.iterdir()) == ["tensor3", "tensor4"] and "removed 0" in done.stdout


def test_a_group_of_workers_stands_for_its_rigs_with_rpc_servers_by_name(tmp_path):
    inventory = tmp_path / "rigs.py"
    worker = lambda ip: {"gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}], "services": [],  # noqa: E731
                         "models": {}, "rpc_servers": [{"name": "gpu", "host": ip}]}
    inventory.write_text(
        "garage = [('garage', {'gpus': [], 'ram_gib': 64, 'models': {'gemma': {'repo': 'acme/gemma-GGUF'}}, "
        "'services': [{'name': 'chat', 'model': 'gemma', 'port': 8080, 'rpc_workers': ['office']}]})]\n"
        f"office = [('office2', {worker('10.10.0.3')!r}), ('office1', {worker('10.10.0.2')!r}), "
        "('printer', {'gpus': [], 'services': [], 'models': {}})]\n")
    entries = load_inventory(inventory, cwd=ROOT)
    from llamarig.hostdata.rpc_links import groups_of
    docs, problems = validate_all([(e.name, e.data) for e in entries], groups_of(entries))
    assert problems == [], [str(p) for p in problems]
    assert rpc.endpoints(docs["garage"]["services"][0]) == ["10.10.0.2:50052", "10.10.0.3:50052"]
    _docs, problems = validate_all([(e.name, e.data) for e in entries if e.name != "garage"] +
                                   [("garage", {**next(e for e in entries if e.name == "garage").data,
                                                "services": [{"name": "chat", "model": "gemma", "port": 8080,
                                                              "rpc_workers": ["garage"]}]})],
                                   {"garage": ["garage"]})
    assert [str(p) for p in problems] == [
        "garage: services[0].rpc_workers[0] = 'garage': expected another rig (a service uses its own GPUs directly, "
        "not through RPC)"]


def test_the_closing_report_says_the_link_must_be_private():
    from llamarig.report import render, rig_report
    from tests.unit.helpers import resolved_rig
    docs = linked({"services": [{"name": "chat", "model": "gemma", "port": 8080, "rpc_workers": ["office"]}]})
    text = render([rig_report(resolved_rig(h, docs[h]), release_of(h, docs[h])) for h in ("garage", "office")], dry=True)
    assert ("llamarig-rpc-office.service: rpc-server at 10.10.0.2:50052, lending CUDA0,CUDA1 -- no authentication: "
            "reachable only on a private network, never the internet") in text
    assert "RPC workers: 10.10.0.2:50052 (rpc-server has no authentication: this link must be a private network)" in text
