"""placement: auto in host data; hand-written placements checked; services sharing GPUs; the CLI on an inventory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from llamarig.release import placements as rigplan
from llamarig.release.flags import server_args
from llamarig.planner.gguf import read_model
from llamarig.hostdata.validate import validate_host
from testbed import synth
from testbed.fakehub import FakeHub
from tests.unit.helpers import rig

GLM = {"glm": {"repo": "acme/GLM-GGUF", "include": ["Q/*"], "file": "Q/glm-00001-of-00003.gguf"}}


def svc(**kw):
    return {"name": "glm", "model": "glm", "port": 8000, **kw}


def problems(data):
    return [str(p) for p in validate_host("r1", data)[1]]


@pytest.mark.parametrize("extra, expected", [
    ({"tensor_split": [1, 1]}, "services[0].tensor_split = [1, 1]: expected null with placement: auto"),
    ({"tensor_overrides": [["exps", "CPU"]]}, "services[0].tensor_overrides"),
    ({"n_cpu_moe": 10}, "services[0].n_cpu_moe = 10: expected null with placement: auto"),
    ({"extra_args": ["-ot", "exps=CPU"]}, "services[0].extra_args = '-ot': expected no placement flag"),
    ({"split_mode": "row"}, "services[0].split_mode = 'row'"),
])
def test_auto_refuses_hand_placement_keys(extra, expected):
    got = problems(rig(models=GLM, services=[svc(placement="auto", ctx_size=4096, **extra)]))
    assert any(expected in p for p in got), got


def test_auto_needs_a_context_size_and_ram_is_positive():
    got = problems(rig(models=GLM, services=[svc(placement="auto")]))
    assert any("services[0].ctx_size = None: expected a context size" in p for p in got), got
    got = problems(rig(models=GLM, ram_gib=0, services=[svc()]))
    assert any(p.startswith("r1: ram_gib = 0: expected a value of at least 1") for p in got), got


@pytest.fixture(scope="module")
def glm(tmp_path_factory):
    d = tmp_path_factory.mktemp("glm")
    return read_model(synth.write_model(str(d / "glm.gguf"), synth.glm47_iq1m(), parts=3)[0])


def _doc(**kw):
    doc, errs = validate_host("r1", rig(**{"models": GLM, **kw}))
    assert not errs, errs
    return doc


def test_auto_service_gets_planned_flags(glm):
    doc = _doc(gpus=[{"model": "RTX 3090", "memory_gib": 24}] * 4, ram_gib=128,
               services=[svc(placement="auto", ctx_size=65536, cache_type_k="q8_0", cache_type_v="q8_0")])
    plans = rigplan.plan_rig(doc, {"glm": glm})
    sp = plans["glm"]
    assert sp.auto and sp.plan.fits
    assert doc["services"][0]["n_gpu_layers"] is None  # the plan is kept beside the declared service
    argv = server_args(doc["services"][0], "m.gguf", doc["build_fork"], sp.placement)
    assert argv[argv.index("--n-gpu-layers") + 1] == "94"
    assert len(argv[argv.index("--tensor-split") + 1].split(",")) == 4
    assert argv[argv.index("--fit") + 1] == "off"
    ots = [argv[i + 1] for i, a in enumerate(argv) if a == "--override-tensor"]
    assert ots[-1] == r"\.ffn_(up|down|gate|gate_up)_(ch|)exps=CPU"


def test_hand_placement_that_does_not_fit_is_refused_with_numbers(glm):
    doc = _doc(gpus=[{"model": "RTX 3090", "memory_gib": 24}] * 6, ram_gib=128,
               services=[svc(ctx_size=184320, cache_type_k="q8_0", cache_type_v="q8_0",
                             tensor_split=[1, 1, 1, 1, 1, 1], n_gpu_layers=999)])
    plans = rigplan.plan_rig(doc, {"glm": glm})
    issues = [str(p) for p in rigplan.placement_problems("r1", doc, plans)]
    assert len(issues) == 1
    assert issues[0].startswith("r1: services[0] = 'glm': expected a placement that fits")
    assert "CUDA1 needs" in issues[0] and "GiB" in issues[0] and "KV" in issues[0]


def test_shared_gpus_split_between_services(glm):
    small = synth.qwen3moe(n_layer=8)
    gpus = [{"model": "RTX 3090", "memory_gib": 24}] * 2
    doc = _doc(gpus=gpus, ram_gib=256, models={**GLM, "small": {"repo": "acme/small", "file": "s.gguf", "include": ["*"]}},
               services=[svc(placement="auto", ctx_size=32768, gpus=[0, 1], shared_gpus=True),
                         {"name": "side", "model": "small", "port": 8001, "gpus": [1], "shared_gpus": True,
                          "n_gpu_layers": 99, "ctx_size": 8192}])
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        small_info = read_model(synth.write_model(os.path.join(d, "s.gguf"), small)[0])
    plans = rigplan.plan_rig(doc, {"glm": glm, "small": small_info})
    side = plans["side"].plan.devices[0]
    glm_rows = plans["glm"].plan.devices
    # the hand-placed sidecar is counted first; the planner keeps GPU 1's total within what it leaves
    assert glm_rows[1].budget == 24 * 2**30 - side.total - 2**30
    assert glm_rows[1].total + side.total <= 24 * 2**30 - 2**30
    assert glm_rows[0].budget == 23 * 2**30


def test_render_and_plan_an_inventory_through_the_hub(tmp_path):
    """A small MoE (2 GB, so the fake Hub hashes it quickly) on two 2 GiB cards: experts partly in RAM."""
    hub_root = tmp_path / "hub"
    rev = hub_root / "acme" / "GLM-GGUF" / "main" / "Q"
    rev.mkdir(parents=True)
    synth.write_model(str(rev / "glm.gguf"), synth.qwen3moe(n_layer=8, n_expert=32), parts=3)
    inv = tmp_path / "inv.py"
    with FakeHub(hub_root) as hub:
        data = {"gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 2}] * 2, "ram_gib": 16, "gpu_margin_mib": 256,
                "hub_endpoint": hub.url, "models": GLM,
                "services": [svc(placement="auto", ctx_size=65536, cache_type_k="q8_0", cache_type_v="q8_0")]}
        inv.write_text(f"rigs = [('r1', {data!r})]\n")
        env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
        r = subprocess.run([sys.executable, "-m", "llamarig", "render", str(inv)], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        rendered = r.stdout
        assert "--tensor-split" in r.stdout and "--override-tensor" in r.stdout and "--fit off" in r.stdout
        gets = len(hub.requests_for(".gguf", "GET"))
        assert gets >= 3  # every part's header, by range requests
        r = subprocess.run([sys.executable, "-m", "llamarig", "plan", str(inv), "--host", "r1", "--service", "glm",
                            "--json"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["fits"] and doc["args"][0] == "--model" and "--override-tensor" in doc["args"]
        # one renderer: the plan's arguments are the unit's, word for word
        from llamarig.release.unit import systemd_split
        exec_start = next(line for line in rendered.splitlines() if line.startswith("ExecStart="))
        assert systemd_split(exec_start[len("ExecStart="):])[1:] == doc["args"]
        assert len(hub.requests_for(".gguf", "GET")) == gets  # headers are cached per commit: no new request
