"""rigs.lock on real rigs: a frozen deploy builds and fetches exactly the lock, refuses data it does not
cover, moves only with `llamarig lock --update`, and a wiped rig comes back to the same bytes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llamarig.release import lock
from .conftest import ROOT
from .test_deploy import chat, changed_ops, failed_ops

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def deployed(bed):
    """The rigs as test_deploy.py leaves them (a no-op after it; a first deploy when this file runs alone)."""
    run = bed.pyinfra("-y")
    assert run.returncode == 0, run.stderr[-4000:]


def lock_cli(bed, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "llamarig", "lock", str(bed.inventory), *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r


def ensure_lock(bed):
    r = lock_cli(bed)
    assert r.returncode == 0, r.stdout + r.stderr
    return bed.project / lock.LOCK_NAME


def test_a_frozen_deploy_holds_still_while_the_hub_moves_and_refuses_what_the_lock_lacks(bed):
    from testbed.hubrepo import GEMMA_REPO, populate_hub

    lock_file = ensure_lock(bed)
    try:
        locked = lock.read(lock_file)
        assert {"rig1", "rig2"} <= set(locked)
        assert locked["rig2"]["build"]["commit"] == bed.ssh("rig2", "cat /opt/llamarig/builds/*/.llamarig-build.json "
                                                           "| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"commit\"])'").strip()
        run = bed.pyinfra("-y", "--json")
        assert run.returncode == 0, run.stderr[-4000:]
        assert "frozen by" in run.stderr and changed_ops(run) == {}  # the lock is what the rigs already run

        # `llamarig render` prints, byte for byte, the unit each rig has installed (and the lock's digest).
        for name, units in ((r, e["units"]) for r, e in locked.items()):
            if name not in ("rig1", "rig2"):
                continue
            for unit, digest in units.items():
                service = unit.removeprefix("llamarig-").removesuffix(".service")
                shown = subprocess.run([sys.executable, "-m", "llamarig", "render", str(bed.inventory), "--host", name,
                                        "--service", service], cwd=ROOT, capture_output=True, text=True, timeout=300)
                assert shown.returncode == 0, shown.stderr[-2000:]
                header, _, text = shown.stdout.partition("\n")
                assert f"exactly what a deploy installs ({digest}" in header, header
                assert text[:-1] == bed.unit_text(name, service), (name, unit)

        # The Hub's main moves on (a new commit, same weights): the frozen deploy does not follow.
        commit_before = bed.hub.commit_of(GEMMA_REPO, "main")
        populate_hub(bed.hub.root, note="a README edit upstream")
        moved = bed.hub.commit_of(GEMMA_REPO, "main")
        assert moved != commit_before
        run = bed.pyinfra("-y", "--json", "--limit", "rig2")
        assert run.returncode == 0 and changed_ops(run) == {}, run.stderr[-3000:]

        # Data the lock does not cover stops the run before any host is touched.
        original = bed.inventory.read_text()
        pid = bed.main_pid("rig2")
        bed.inventory.write_text(original.replace('attic = [("rig2", {', 'attic = [("rig2", {\'build_ref\': \'b-broken\', '))
        try:
            refused = bed.pyinfra("-y", "--limit", "rig2")
            assert refused.returncode != 0
            assert "rig2: build_ref = 'b-broken': expected what rigs.lock was locked from, 'b0.3.36' " \
                   "(run `llamarig lock --update` to lock the new data)" in refused.stderr, refused.stderr[-3000:]
            assert "no host was changed" in refused.stderr and "Beginning operation run" not in refused.stderr
        finally:
            bed.inventory.write_text(original)
        assert bed.main_pid("rig2") == pid

        # --update moves the model forward and says so; the next deploy follows, fetching no weights again.
        r = lock_cli(bed, "--update")
        assert r.returncode == 0, r.stderr
        assert f"rig2: model gemma: {GEMMA_REPO} {commit_before[:12]}..{moved[:12]}" in r.stdout, r.stdout
        assert "rig2: unit llamarig-chat.service changed" in r.stdout
        bed.hub.clear_requests()
        run = bed.pyinfra("-y", "--json", "--limit", "rig2")
        assert run.returncode == 0, run.stderr[-4000:]
        assert f"/gemma/{moved[:12]}/" in bed.unit_text("rig2")
        assert bed.hub.requests_for(".gguf", "GET") == []  # the same files: linked from the old revision
        assert chat(bed.ports["rig2"]).strip()
    finally:
        lock_file.unlink(missing_ok=True)


def test_a_wiped_rig_comes_back_identical(bed):
    from testbed.rig import Rig, gpu_specs

    lock_file = ensure_lock(bed)
    rig = bed.rigs["rig2"]
    state = ("cat /etc/systemd/system/llamarig-*.service; cat /opt/llamarig/builds/*/.llamarig-build.json; "
             "cd /var/lib/llamarig/models && find . -name '*.gguf' | sort | xargs sha256sum")
    before = bed.ssh("rig2", state)
    assert ".gguf" in before and '"commit"' in before
    try:
        rig.destroy()
        bed.rigs["rig2"] = Rig.create("rig2", rig.ssh_port, gpu_specs("3090", "rig2"), base_dir=rig.dir.parent).boot()
        assert bed.ssh("rig2", "ls /etc/systemd/system/ | grep -c llamarig || true").strip() == "0"  # bare
        run = bed.pyinfra("-y", "--json", "--limit", "rig2")
        assert run.returncode == 0, run.stderr[-4000:]
        assert failed_ops(run) == {}
        assert bed.ssh("rig2", state) == before  # units, the binary's commit and options, every model byte
        assert chat(bed.ports["rig2"]).strip()
    finally:
        lock_file.unlink(missing_ok=True)
