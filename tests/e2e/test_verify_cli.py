"""``llamarig verify`` against the deployed container rigs: every service live, then one stopped."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow

SERVICES = {("rig1", "chat"): 4096, ("rig1", "chat2"): 1024, ("rig2", "chat"): 2048}


def verify(bed, *args) -> tuple[subprocess.CompletedProcess, list[dict]]:
    run = subprocess.run([sys.executable, "-m", "llamarig", "verify", str(bed.inventory), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run, json.loads(run.stdout)


def by_key(checks: list[dict]) -> dict:
    return {(c["host"], c["service"], c["check"]): c for c in checks}


def test_verify_reports_every_service_live_then_a_stopped_one_failed(bed):
    deploy = bed.pyinfra("-y", "--json")
    assert deploy.returncode == 0, deploy.stderr[-4000:]

    run, checks = verify(bed, "--inference", "--json")
    assert run.returncode == 0, json.dumps([c for c in checks if c["ok"] is False], indent=1) + run.stderr[-2000:]
    seen = by_key(checks)
    services = dict(SERVICES)
    if "rig3" in bed.rigs:  # test_deploy.py's third rig, from group data alone (no parallel declared)
        services[("rig3", "chat")] = 1024
    assert {(c["host"], c["service"]) for c in checks} == set(services)
    for (rig, name), ctx in services.items():
        assert seen[(rig, name, "ctx_size")]["grade"] == "configured" and seen[(rig, name, "ctx_size")]["value"] == ctx
        assert seen[(rig, name, "ctx_size")]["ok"] is None
        for check in ("unit", "health", "n_ctx", "model_path"):
            assert seen[(rig, name, check)]["grade"] == "live" and seen[(rig, name, check)]["ok"] is True, (rig, name, check)
        assert seen[(rig, name, "unit")]["value"] == "active"
        assert seen[(rig, name, "n_ctx")]["expected"] == ctx
        if rig != "rig3":  # one slot declared: its context is the whole declared context
            assert seen[(rig, name, "n_ctx")]["value"] == ctx and seen[(rig, name, "slots")]["value"] == 1
        exposure = seen[(rig, name, "exposure")]
        assert exposure["grade"] == "measured" and exposure["ok"] is True and isinstance(exposure["value"], float)
        assert exposure["value"] <= 1.5, (rig, name, exposure)  # live, as offline (tests/unit/test_hardening.py)
        completion = seen[(rig, name, "completion")]
        assert completion["grade"] == "measured" and completion["ok"] is True
        assert completion["value"]["completion_tokens"] > 0 and completion["value"]["tokens_per_s"] > 0
        print(rig, name, "exposure", exposure["value"], "completion", completion["value"])
    # Sampling is compared where /props exposes it: rig1's chat declares temp 0.7, rig2's temp 0.0.
    assert seen[("rig1", "chat", "sampling.temp")]["ok"] is True
    assert seen[("rig2", "chat", "sampling.temp")]["ok"] is True

    bed.ssh("rig2", "systemctl stop llamarig-chat")
    try:
        run, checks = verify(bed, "--json")
        assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
        seen = by_key(checks)
        assert seen[("rig2", "chat", "unit")]["ok"] is False
        assert seen[("rig2", "chat", "unit")]["value"] == "inactive"
        assert seen[("rig2", "chat", "health")]["ok"] is False
        failed = {(c["host"], c["service"]) for c in checks if c["ok"] is False}
        assert failed == {("rig2", "chat")}  # rig1's services are still checked, and pass
        assert seen[("rig1", "chat2", "n_ctx")]["ok"] is True

        text = subprocess.run([sys.executable, "-m", "llamarig", "verify", str(bed.inventory), "--host", "rig2"],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert text.returncode == 1
        assert "rig2 chat [live] FAILED unit: llamarig-chat.service is inactive" in text.stdout, text.stdout
        assert "rig1" not in text.stdout
        print(text.stdout)
    finally:
        bed.ssh("rig2", "systemctl start llamarig-chat")
