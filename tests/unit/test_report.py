"""The closing report (llamarig/report.py): what each service serves, where its layers and experts are,
the VRAM the plan predicts and, after a real deploy, what the rig said."""

from __future__ import annotations

import json

import pytest

from llamarig import report
from llamarig.hostdata.validate import validate_host
from llamarig.planner.gguf import read_model
from llamarig.release import placements as rigplan
from llamarig.release.assemble import RigFacts, make_release
from testbed import synth

from .helpers import resolved_rig, rig
from .test_rigplan import GLM, svc


@pytest.fixture(scope="module")
def glm(tmp_path_factory):
    d = tmp_path_factory.mktemp("glm")
    return read_model(synth.write_model(str(d / "glm.gguf"), synth.glm47_iq1m(), parts=3)[0])


def _rig(glm):
    doc, errs = validate_host("garage", rig(models=GLM, gpus=[{"model": "RTX 3090", "memory_gib": 24}] * 4,
                                            ram_gib=128, power_limits_w={0: 250, 1: 260},
                                            services=[svc(placement="auto", ctx_size=65536, cache_type_k="q8_0",
                                                          cache_type_v="q8_0", parallel=2)]))
    assert not errs, errs
    resolved = resolved_rig("garage", doc, placements=rigplan.plan_rig(doc, {"glm": glm}))
    return resolved, make_release(resolved, RigFacts(False))


def test_the_report_says_what_each_service_serves_and_how_it_is_placed(glm):
    resolved, release = _rig(glm)
    r = report.rig_report(resolved, release)
    (s,) = r["services"]
    plan = resolved.placements["glm"].plan
    assert s["url"] == f"http://127.0.0.1:{resolved.doc['services'][0]['port']}" and s["model"] == "glm" and s["repo"] == GLM["glm"]["repo"]
    assert s["fork"] == "llama.cpp" and s["fork_commit"] == resolved.commit and s["commit"] == resolved.models["glm"].commit
    assert s["ctx_size"] == 65536 and s["slots"] == 2 and s["gpus"] == [0, 1, 2, 3] and s["planned_by"] == "llamarig"
    on_gpus = sum(1 for d in plan.layers[:-1] if d != "CPU")
    # every layer on a GPU, and the experts the overrides send to the CPU counted from the flags themselves
    assert s["placement"].startswith(", ".join(f"{plan.layers[:-1].count(d)} layers on {d}"
                                               for d in ["CUDA0", "CUDA1", "CUDA2", "CUDA3"]))
    assert on_gpus == len(plan.layers) - 1 and "routed experts of" in s["placement"] and "on the CPU" in s["placement"]
    assert s["predicted_vram_mib"] == {row.name: round(row.total / 2**20) for row in plan.devices}
    assert [g["power_limit_w"] for g in r["gpus"]] == [250, 260, None, None]
    assert s["answered"] is None and s["exposure"] is None and r["executed"] is False
    text = report.render([r], dry=True)
    assert "--dry: planned" in text and "GPU 0: RTX 3090 24 GiB, 250 W" in text and "predicted VRAM: CUDA0 " in text
    json.dumps(r)  # machine-readable as it is


def test_after_a_deploy_it_says_what_the_rig_showed(glm):
    resolved, release = _rig(glm)
    unit = "llamarig-glm.service"
    live = {"verdicts": {unit: {"ok": True, "answer": "Hello!<|im_end|>\nmore"}},
            "gpus": [{"index": 0, "memory_used_mib": 21000, "power_limit_w": 250.0}], "exposure": {unit: 2.1}}
    r = report.rig_report(resolved, release, live)
    (s,) = r["services"]
    assert s["answered"] == "yes: 'Hello!'" and s["exposure"] == 2.1 and r["executed"] is True
    prompt = release.units[unit].expect["prompt"]
    echo = report.rig_report(resolved, release, {"verdicts": {unit: {"ok": True, "answer": prompt + "<|im_end|>",
                                                                      "completion_tokens": 9}}})
    assert echo["services"][0]["answered"] == "yes (9 tokens), repeating the prompt: a base model, not tuned for chat, does"
    assert r["gpus"][0]["memory_used_mib"] == 21000 and r["gpus"][1]["memory_used_mib"] is None
    text = report.render([r], dry=False)
    assert "21000 MiB used now" in text and "answered: yes: 'Hello!'" in text and "exposure" in text
    failed = report.rig_report(resolved, release, {"verdicts": {unit: {"ok": False, "error": "HTTP 500"}}})
    assert failed["services"][0]["answered"] == "no: HTTP 500"
    quick = report.rig_report(resolved, release, {"verdicts": {unit: {"ok": True, "answered_before": "at noon"}}})
    assert quick["services"][0]["answered"] == "yes, at noon"


def test_a_rig_that_failed_is_named_not_described():
    text = report.render([{"rig": "ghost", "failed": True, "gpus": [], "services": [], "executed": False}], dry=False)
    assert "[ghost] FAILED: not reported" in text and "GPU" not in text
