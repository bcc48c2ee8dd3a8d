"""Faults on real rigs: whatever fails, the service that answered before keeps answering.

Each test breaks one thing (the build, the Hub's connection, the new unit, a rig's
reachability), checks that the run fails where it should and says why, that the
old service still serves, and that putting the data back converges again.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from .conftest import results
from .test_deploy import chat, changed_ops, failed_ops

pytestmark = pytest.mark.slow

RIG2_SAMPLING = "'sampling': {'temp': 0.0}"


@pytest.fixture(scope="module", autouse=True)
def deployed(bed):
    """The rigs as test_deploy.py leaves them (a no-op after it; a first deploy when this file runs alone)."""
    run = bed.pyinfra("-y")
    assert run.returncode == 0, run.stderr[-4000:]


RIG2_HOST = 'attic = [("rig2", {'


def rig2_with(bed, extra: str, service: bool = False) -> str:
    """The inventory with ``extra`` (python source of dict items) added to rig2's host data, or to its
    service's with ``service``; returns the original text."""
    original = bed.inventory.read_text()
    anchor = RIG2_SAMPLING if service else RIG2_HOST
    assert anchor in original
    replacement = anchor + ", " + extra if service else anchor + extra + ", "
    bed.inventory.write_text(original.replace(anchor, replacement, 1))
    return original


def served(bed, rig: str = "rig2") -> dict:
    """What rig2's chat service runs now: its PID, unit text and the digests of its model files."""
    unit = bed.unit_text(rig)
    model = next(w for w in unit.split() if w.endswith(".gguf"))
    folder = model.rsplit("/", 1)[0]
    return {"pid": bed.main_pid(rig), "unit": unit, "model": model,
            "sha256": bed.ssh(rig, f"sha256sum {folder}/*.gguf")}


STAGES = ["GPU power", "Build", "Models", "Services", "Verify", "Old model revisions"]  # deploy.py's order


def failed_at(run, prefix: str) -> set[str]:
    """Check that rig2 failed at the operation named ``prefix...`` and nothing of an earlier stage failed;
    returns every host any operation failed on. pyinfra counts the operations a failed host never ran as
    errors too, and one call site is one operation whatever each rig names it (``names``, while ``name``
    is one of them): so the stage is what tells the failure from what came after it."""
    failed: dict[str, list[str]] = {}  # every name of a failed operation -> its failed hosts
    for op in results(run)["results"]["operations"]:
        for name in op["names"] if op["error"] else ():  # one call site, one operation, a name per rig
            failed[name] = sorted({*failed.get(name, []), *op["error"]})
    names = [name for name in failed if name.startswith(prefix)]
    assert names and all(failed[name] == ["rig2"] for name in names), failed
    earlier = STAGES[:STAGES.index(prefix.split(" | ")[0])]
    assert not [name for name in failed if name.split(" | ")[0] in earlier], failed
    return {h for hosts in failed.values() for h in hosts}


def converge(bed, original: str) -> None:
    bed.inventory.write_text(original)
    run = bed.pyinfra("-y", "--json", "--limit", "rig2")
    assert run.returncode == 0, run.stderr[-4000:]
    assert chat(bed.ports["rig2"]).strip()


def test_a_build_that_fails_shows_the_compiler_and_keeps_the_old_binary_serving(bed):
    from testbed.sources import BROKEN_ERROR, ensure_broken_ref

    tag, commit = ensure_broken_ref()
    before = served(bed)
    original = rig2_with(bed, f"'build_ref': {tag!r}")
    try:
        run = bed.pyinfra("-y", "--json")  # all rigs: with rig2 alone failed, pyinfra would print no results
        assert run.returncode != 0
        assert failed_at(run, f"Build | Build llama.cpp {commit[:12]} (CPU)") == {"rig2"}  # the others deployed
        # The tail of the compiler's output says what broke, in pyinfra's output.
        assert BROKEN_ERROR in run.stderr and "ggml.c" in run.stderr, run.stderr[-4000:]
        assert served(bed) == before  # same unit, same process, same model
        assert chat(bed.ports["rig2"]).strip()
        assert bed.ssh("rig2", f"ls -d /opt/llamarig/builds/llama.cpp-{commit[:12]}-* 2>/dev/null || true").strip() == ""
    finally:
        converge(bed, original)
    assert served(bed)["unit"] == before["unit"]


def test_a_download_cut_off_completes_next_run_without_refetching_and_the_old_model_serves(bed):
    """A new revision of the model (split in four parts instead of three) is fetched beside the one that
    serves; the Hub resets the connection in the middle of its third part."""
    from testbed.hubrepo import GEMMA_REPO, populate_hub

    populate_hub(bed.hub.root, revision="v2", n_parts=4, note="re-split in four parts")
    v2 = bed.hub.commit_of(GEMMA_REPO, "v2")
    parts = [f"Q4_K_M/gemma-3-270m-Q4_K_M-0000{i}-of-00004.gguf" for i in range(1, 5)]
    before = served(bed)
    original = rig2_with(bed, "'models': {'gemma': {'repo': %r, 'include': ['Q4_K_M/*.gguf'], 'revision': 'v2'}}"
                         % GEMMA_REPO)
    new_dir = f"/var/lib/llamarig/models/gemma/{v2[:12]}"
    try:
        bed.hub.fail_after_bytes(parts[2], 3_000_000, times=5, mode="reset")
        bed.hub.clear_requests()
        cut = bed.pyinfra("-y", "--json")
        bed.hub.clear_faults()
        assert cut.returncode != 0
        assert failed_at(cut, f"Models | Model gemma: {GEMMA_REPO}@{v2[:12]}") == {"rig2"}
        assert served(bed) == before  # the serving model and its service were not touched
        assert chat(bed.ports["rig2"]).strip()
        manifest = json.loads(bed.ssh("rig2", f"cat {new_dir}/.llamarig-manifest.json"))
        assert sorted(manifest["files"]) == parts[:2]  # what finished is recorded as verified
        assert bed.hub.requests_for(parts[2], "GET")

        bed.hub.clear_requests()
        run = bed.pyinfra("-y", "--json", "--limit", "rig2")
        assert run.returncode == 0, run.stderr[-4000:]
        for part in parts[:2]:
            assert bed.hub.requests_for(part, "GET") == [], part  # finished files are not fetched again
        for part in parts[2:]:
            assert bed.hub.requests_for(part, "GET"), part
        now = served(bed)
        assert now["model"] == f"{new_dir}/{parts[0]}" and now["pid"] != before["pid"]
        assert chat(bed.ports["rig2"]).strip()
        # Every part is the Hub's, and the old revision went once the new one answered.
        local = {line.split()[1].rsplit("/", 1)[1]: line.split()[0] for line in now["sha256"].splitlines()}
        hub_dir = bed.hub.repo_dir(GEMMA_REPO) / "v2"
        for part in parts:
            assert local[part.rsplit("/", 1)[1]] == bed.hub.file_info(part, hub_dir / part).sha256
        old_dir = before["model"].rsplit("/Q4_K_M/", 1)[0]
        assert bed.ssh("rig2", f"test -e {old_dir} && echo kept || echo removed").strip() == "removed"
        again = bed.pyinfra("-y", "--json", "--limit", "rig2")
        assert again.returncode == 0 and changed_ops(again) == {}
    finally:
        bed.hub.clear_faults()
        converge(bed, original)


def test_a_unit_that_fails_its_check_is_rolled_back_and_the_old_one_answers(bed):
    before = served(bed)
    original = rig2_with(bed, "'extra_args': ['--seed', 'not-a-number']", service=True)
    try:
        run = bed.pyinfra("-y", "--json")
        assert run.returncode != 0
        assert failed_at(run, "Verify | Verify llamarig-chat.service") == {"rig2"}
        err = run.stderr
        assert "llamarig-chat.service exited while starting" in err, err[-4000:]
        assert "--- journalctl -u llamarig-chat.service" in err and '"--seed"' in err  # the journal tail
        assert "rolled llamarig-chat.service back to the last unit that answered" in err
        assert "it answers again" in err
        now = served(bed)
        assert now["unit"] == before["unit"] and now["pid"] != before["pid"]  # the old unit, restarted
        assert bed.ssh("rig2", "systemctl is-active llamarig-chat.service").strip() == "active"
        assert chat(bed.ports["rig2"]).strip()
    finally:
        converge(bed, original)
    assert served(bed)["unit"] == before["unit"]


def test_an_unreachable_rig_fails_alone_and_the_others_deploy(bed):
    from testbed.common import free_port

    original = bed.inventory.read_text()
    key = bed.rigs["rig1"].ssh_config()["key"]
    ghost = {"ssh_hostname": "127.0.0.1", "ssh_port": free_port(), "ssh_user": "root", "ssh_key": key,
             "ssh_known_hosts_file": "/dev/null", "ssh_strict_host_key_checking": "no", "ssh_connect_retries": 0}
    bed.inventory.write_text(original + textwrap.dedent(f"""\
        ghost = [("ghost", {ghost!r})]
    """))
    pids = {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")}
    try:
        run = bed.pyinfra("-y", "--json")
        assert run.returncode != 0
        out = results(run)["results"]
        assert out["failed_hosts"] == ["ghost"]
        assert failed_ops(run) == {}  # every operation of the reachable rigs succeeded
        hosts = {h for op in out["operations"] for h in op["success"] + op["no_change"]}
        assert {"rig1", "rig2"} <= hosts and "ghost" not in hosts
        assert "ghost" in run.stderr and "Could not connect" in run.stderr, run.stderr[-3000:]
        text = bed.pyinfra("-y")
        assert text.returncode != 0
        summary = text.stderr[text.stderr.rindex("--> Results:"):]
        ok = sorted(hosts)
        assert summary.rstrip().splitlines()[-1] == (f"--> llamarig: {len(ok)} rig(s) deployed ({', '.join(ok)}); "
                                                     "ghost FAILED: unreachable (could not connect)"), summary
        assert {rig: bed.main_pid(rig) for rig in ("rig1", "rig2")} == pids
        for port in (bed.ports["rig1"], bed.ports["rig2"]):
            assert chat(port).strip()
    finally:
        bed.inventory.write_text(original)


def test_a_flipped_byte_in_a_served_model_is_found_and_fetched_again(bed):
    before = served(bed)
    folder = before["model"].rsplit("/", 1)[0]
    part = f"{folder}/gemma-3-270m-Q4_K_M-00002-of-00003.gguf"
    good = bed.ssh("rig2", f"sha256sum {part}").split()[0]
    size = bed.ssh("rig2", f"stat -c %s {part}").strip()
    flip = ("import os, sys; p = sys.argv[1]; f = open(p, 'r+b'); f.seek(os.path.getsize(p) // 2); "
            "b = f.read(1); f.seek(-1, 1); f.write(bytes([b[0] ^ 255])); f.close()")
    bed.ssh("rig2", f"python3 -c \"{flip}\" {part}")
    assert bed.ssh("rig2", f"stat -c %s {part}").strip() == size  # same size: only the digest tells
    assert bed.ssh("rig2", f"sha256sum {part}").split()[0] != good
    bed.hub.clear_requests()
    run = bed.pyinfra("-y", "--json", "--limit", "rig2")
    assert run.returncode == 0, run.stderr[-4000:]
    assert [r.path for r in bed.hub.requests if r.method == "GET" and r.path.endswith(".gguf")] == \
        [r.path for r in bed.hub.requests_for(part.rsplit("/", 1)[1], "GET")] != []  # that part alone
    assert bed.ssh("rig2", f"sha256sum {part}").split()[0] == good
    now = served(bed)
    assert now["unit"] == before["unit"] and now["pid"] != before["pid"]  # the server reloaded the model
    assert chat(bed.ports["rig2"]).strip()


def test_a_service_no_longer_declared_is_stopped_and_forgotten(bed):
    garage = bed.project / "group_data" / "garage.py"
    original = garage.read_text()
    marker = '}, {\n    "name": "chat2"'
    assert marker in original
    record = "/var/lib/llamarig/known-good/llamarig-chat2.service.json"
    assert bed.ssh("rig1", f"test -f {record} && echo yes").strip() == "yes"
    pid = bed.main_pid("rig1")
    garage.write_text(original[:original.index(marker)] + "}]\n")
    try:
        run = bed.pyinfra("-y", "--json", "--limit", "rig1")
        assert run.returncode == 0, run.stderr[-4000:]
        gone = "test -e /etc/systemd/system/llamarig-chat2.service || echo gone"
        assert bed.ssh("rig1", gone).strip() == "gone"
        assert bed.ssh("rig1", "systemctl is-active llamarig-chat2.service", check=False).strip() != "active"
        assert bed.ssh("rig1", f"test -e {record} || echo gone").strip() == "gone"
        assert bed.main_pid("rig1") == pid  # the service still declared was left running
    finally:
        garage.write_text(original)
    run = bed.pyinfra("-y", "--json", "--limit", "rig1")
    assert run.returncode == 0, run.stderr[-4000:]
    assert chat(bed.ports["rig1b"]).strip()
