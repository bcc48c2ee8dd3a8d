"""deploy.py run whole by pyinfra against rigs its ``@fake`` connector plays: which commands each state of a rig
gets. What the operations decide alone is in the JSON specs; this is how the tasks wire them together (what
restarts a service, what stops a unit, what a rollback and a prune wait for), without containers."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

from llamarig.release import lock
from llamarig.release.assemble import RigFacts, make_release
from llamarig.release.resolve import real_lookups, resolve_rig
from llamarig.hostdata.validate import validate_host
from llamarig.hostdata.inventory import load_group_data

from .conftest import MODEL_BYTES, ROOT

HELP = (ROOT / "tests" / "unit" / "data" / "help-llama.cpp.txt").read_text()
UNIT = "/etc/systemd/system/llamarig-chat.service"
CHECK_OK = json.dumps({"unit": "llamarig-chat.service", "ok": True, "checks": [], "live_n_ctx": 2048,
                       "live_slots": 1, "answer": "Hello."})


def model_state(hub) -> str:
    """What the rig's downloader reports of a complete revision directory of the tiny model."""
    commit = hub.commit_of("acme/tiny-GGUF")
    files = {"tiny.gguf": {"size": len(MODEL_BYTES), "sha256": hashlib.sha256(MODEL_BYTES).hexdigest()}}
    ident = {"tiny.gguf": [len(MODEL_BYTES), 1, 2, 3]}
    manifest = {"repo": "acme/tiny-GGUF", "commit": commit, "files": files, "identity": ident}
    return json.dumps({"manifest": manifest, "sizes": {"tiny.gguf": len(MODEL_BYTES)}, "identity": ident})


def release(fake_rigs):
    """The release llamarig computes for the fake rig, by the same code as the deploy (a CPU rig)."""
    defaults = load_group_data([ROOT / "group_data"])["all"]
    name, data = fake_rigs.rigs[0]
    doc, problems = validate_host(name, {**defaults, **data})
    assert not problems
    rig, problems = resolve_rig(name, doc, real_lookups())
    assert not problems
    return make_release(rig, RigFacts(False))


def deployed(fake_rigs):
    """A rig as a first deploy leaves it: what it uploaded, built, fetched and recorded."""
    fake_rigs.scenario["responses"] = [["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK]]
    first = fake_rigs.deploy()
    assert first.returncode == 0, first.output[-3000:]
    rel = release(fake_rigs)
    files = dict(first.puts())
    files[rel.build["link"]] = {"link": rel.build["prefix"]}
    fake_rigs.scenario = {"files": files, "responses": [
        ["--help 2>&1", HELP],
        ["llamarig-check.py --expect", CHECK_OK],
        [f"if test -x {rel.build['prefix']}/bin/llama-server", rel.build["record"]],
        ["--state /var/lib/llamarig/models/tiny/", model_state(fake_rigs.hub)],
        ["ls /etc/systemd/system", "llamarig-chat.service"],
    ]}
    return first, rel


def test_a_first_deploy_builds_fetches_installs_the_released_unit_starts_checks_and_records(fake_rigs):
    fake_rigs.scenario["responses"] = [["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK]]
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    rel = release(fake_rigs)
    u = rel.units["llamarig-chat.service"]
    puts = run.puts()
    assert puts[UNIT] == u.text  # the deploy installs the release, byte for byte
    assert json.loads(puts["/var/lib/llamarig/expect/llamarig-chat.service.json"]) == u.expect
    record = next(c for p, c in puts.items() if p.endswith("known-good/.llamarig-chat.service.json.tmp"))
    assert json.loads(record) == {"unit": "llamarig-chat.service", "text": u.text, "expect": u.expect}
    cmds = run.commands()
    order = [next(i for i, c in enumerate(cmds) if needle in c) for needle in (
        "llamarig-build.sh /opt/llamarig/src/llama.cpp", f"ln -s {rel.build['prefix']}", "llamarig-fetch-model.py --repo",
        "systemctl daemon-reload", "systemctl restart llamarig-chat.service", "llamarig-check.py --expect")]
    assert order == sorted(order), cmds
    build = run.ran("llamarig-build.sh /opt/llamarig/src/llama.cpp")[0]
    assert rel.build["commit"] in build and "'.llamarig-build.json'" not in build and ".llamarig-build.json" in build


def test_a_second_deploy_of_an_unchanged_rig_builds_fetches_and_restarts_nothing(fake_rigs):
    _, rel = deployed(fake_rigs)
    record = json.dumps({"unit": "llamarig-chat.service", "text": rel.units["llamarig-chat.service"].text,
                         "expect": rel.units["llamarig-chat.service"].expect}, indent=1, sort_keys=True) + "\n"
    fake_rigs.scenario["files"]["/var/lib/llamarig/known-good/llamarig-chat.service.json"] = record
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    for needle in ("llamarig-build.sh /opt", "llamarig-fetch-model.py --repo", "systemctl restart",
                   "systemctl daemon-reload", "--rollback"):
        assert not run.ran(needle), needle
    assert UNIT not in run.puts() and not [p for p in run.puts() if "known-good" in p]


def test_a_changed_build_restarts_its_services_though_the_unit_is_the_same(fake_rigs):
    _, rel = deployed(fake_rigs)
    fake_rigs.scenario["responses"] = [r for r in fake_rigs.scenario["responses"] if "if test -x" not in r[0]]
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran("llamarig-build.sh /opt") and UNIT not in run.puts()
    assert run.ran("systemctl restart llamarig-chat.service")


def test_a_model_fetched_again_restarts_its_services(fake_rigs):
    deployed(fake_rigs)
    fake_rigs.scenario["responses"] = [r for r in fake_rigs.scenario["responses"] if "--state" not in r[0]]
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran("llamarig-fetch-model.py --repo") and not run.ran("llamarig-build.sh /opt")
    assert run.ran("systemctl restart llamarig-chat.service") and UNIT not in run.puts()


def test_a_changed_flag_puts_the_unit_and_restarts_only_then(fake_rigs):
    deployed(fake_rigs)
    fake_rigs.rigs[0][1]["services"][0]["ctx_size"] = 4096
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert "--ctx-size 4096" in run.puts()[UNIT]
    assert run.ran("systemctl daemon-reload") and run.ran("systemctl restart llamarig-chat.service")
    assert not run.ran("llamarig-build.sh /opt")


def test_a_flag_the_build_lacks_leaves_the_unit_and_the_service_as_they_were(fake_rigs):
    deployed(fake_rigs)
    fake_rigs.rigs[0][1]["services"][0]["extra_args"] = ["--no-such-flag"]
    run = fake_rigs.deploy()
    assert run.returncode != 0
    assert [c for c in run.commands() if "does not accept --no-such-flag" in c]
    assert UNIT not in run.puts() and not run.ran("systemctl restart") and not run.ran("llamarig-check.py --expect")


def test_a_service_that_does_not_answer_is_rolled_back_and_the_old_revision_kept(fake_rigs):
    deployed(fake_rigs)
    fake_rigs.rigs[0][1]["services"][0]["ctx_size"] = 4096
    fake_rigs.scenario["responses"] = [
        ["llamarig-check.py --expect", json.dumps({"ok": False, "error": "the completion produced no tokens",
                                                   "journal": "loaded"})],
        ["-name .llamarig-manifest.json", "tiny/0123456789ab/.llamarig-manifest.json"],
        *fake_rigs.scenario["responses"]]
    run = fake_rigs.deploy()
    assert run.returncode != 0
    rollback = run.ran("--rollback /var/lib/llamarig/known-good/llamarig-chat.service.json")
    assert rollback and "the completion produced no tokens" in rollback[0] and "--unit-dir /etc/systemd/system" in rollback[0]
    assert not run.ran("rm -rf /var/lib/llamarig/models/tiny/")
    assert not [p for p in run.puts() if "known-good" in p]


def test_old_revisions_are_removed_once_every_service_answered(fake_rigs):
    deployed(fake_rigs)
    fake_rigs.scenario["responses"].insert(0, ["-name .llamarig-manifest.json",
                                               "tiny/0123456789ab/.llamarig-manifest.json\nother/aaaaaaaaaaaa/.llamarig-manifest.json"])
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran("rm -rf /var/lib/llamarig/models/tiny/0123456789ab")
    assert not run.ran("rm -rf /var/lib/llamarig/models/other")  # a model no longer declared is left alone


def test_a_unit_no_longer_declared_is_stopped_removed_and_forgotten(fake_rigs):
    deployed(fake_rigs)
    fake_rigs.scenario["responses"][:0] = [
        ["ls /etc/systemd/system", "llamarig-chat.service\nllamarig-old.service"],
        ["--property SubState llamarig-old.service", "Id=llamarig-old.service\nSubState=running"]]
    for path in ("/etc/systemd/system/llamarig-old.service", "/var/lib/llamarig/known-good/llamarig-old.service.json",
                 "/var/lib/llamarig/expect/llamarig-old.service.json"):
        fake_rigs.scenario["files"][path] = "old\n"
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert run.ran("systemctl stop llamarig-old.service")
    for path in ("/etc/systemd/system/llamarig-old.service", "/var/lib/llamarig/known-good/llamarig-old.service.json",
                 "/var/lib/llamarig/expect/llamarig-old.service.json"):
        assert run.ran(f"rm -f {path}"), path


def test_a_gpu_rig_builds_for_its_cards_and_sets_their_power(fake_rigs):
    data = fake_rigs.rigs[0][1]
    data.update(gpus=[{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 2, power_limit_w=300)
    fake_rigs.scenario["responses"] = [
        ["command -v nvcc", "/usr/local/cuda/bin/nvcc"],
        ["nvidia-smi --query-gpu=index", "0, NVIDIA GeForce RTX 3090, 24576, 8.6, 350.00, 350.00, 100.00, 400.00, Disabled\n"
                                         "1, NVIDIA GeForce RTX 3090, 24576, 8.6, 300.00, 350.00, 100.00, 400.00, Enabled"],
        ["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK]]
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    build = run.ran("llamarig-build.sh /opt")[0]
    assert "-DGGML_CUDA=ON" in build and "-DCMAKE_CUDA_ARCHITECTURES=86" in build
    assert run.ran("nvidia-smi -i 0 -pm 1") and run.ran("nvidia-smi -i 0 -pl 300")
    assert not run.ran("nvidia-smi -i 1 -pl") and not run.ran("nvidia-smi -i 1 -pm")
    assert "ExecStart=nvidia-smi -i 1 -pl 300" in run.puts()["/etc/systemd/system/llamarig-power.service"]
    assert "CUDA_VISIBLE_DEVICES=0,1" in run.puts()[UNIT]


def _lock(fake_rigs):
    fake_rigs.deploy()  # writes the inventory
    inventory = fake_rigs.dir / "inventory.py"
    p = subprocess.run([sys.executable, "-m", "llamarig", "lock", str(inventory)], cwd=ROOT, capture_output=True,
                       text=True, env={"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(fake_rigs.dir / "cache")})
    assert p.returncode == 0, p.stdout + p.stderr
    return inventory.parent / lock.LOCK_NAME


def test_a_lock_whose_build_key_differs_stops_every_rig_before_any_operation(fake_rigs):
    path = _lock(fake_rigs)
    entries = lock.read(path)
    entries["@fake/rig1"]["build"]["key"] = "llama.cpp-000000000000-0000000000"
    lock.write(path, entries, "inventory.py")
    fake_rigs.scenario["responses"] = [["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK]]
    run = fake_rigs.deploy()
    assert run.returncode != 0 and "the build rigs.lock locked, llama.cpp-000000000000-0000000000" in run.output
    assert "no host was changed" in run.output
    assert not [c for c in run.commands() if "llamarig-build.sh" in c or "systemctl" in c or "apt-get" in c]


def test_a_locked_rig_installs_the_unit_whose_digest_the_lock_holds(fake_rigs):
    path = _lock(fake_rigs)
    fake_rigs.scenario["responses"] = [["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK]]
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    assert lock.unit_digest(run.puts()[UNIT]) == lock.read(path)["@fake/rig1"]["units"]["llamarig-chat.service"]


def test_every_rig_is_prepared_with_its_own_facts_and_release(fake_rigs):
    """One host's deploy code prepares all of them: each rig's nvcc and cards decide its own build."""
    card = [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}]
    fake_rigs.rigs[0][1]["gpus"] = card
    fake_rigs.rigs.append(("@fake/rig2", dict(fake_rigs.rigs[0][1])))
    fake_rigs.scenario["responses"] = [
        ["command -v nvcc", "/usr/local/cuda/bin/nvcc", "@fake/rig2"],  # rig1 has no CUDA toolkit
        ["nvidia-smi --query-gpu=index", "0, NVIDIA GeForce RTX 3090, 24576, 8.6, 350.00, 350.00, 100.00, 400.00, Enabled"],
        ["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK]]
    run = fake_rigs.deploy()
    assert run.returncode == 0, run.output[-3000:]
    cpu_build = run.ran("llamarig-build.sh /opt", "@fake/rig1")
    gpu_build = run.ran("llamarig-build.sh /opt", "@fake/rig2")
    assert cpu_build and gpu_build and "-DGGML_CUDA=ON" in gpu_build[0] and "-DGGML_CUDA=ON" not in cpu_build[0]
    assert run.puts("@fake/rig1")[UNIT] != run.puts("@fake/rig2")[UNIT]


def test_an_api_key_reaches_the_rig_as_a_root_only_file_and_a_stale_one_is_removed(fake_rigs, monkeypatch):
    canary = "sk-wiring-CANARY-77"
    fake_rigs.rigs[0][1]["services"][0]["api_key_env"] = "WIRING_KEY"
    deployed_env = {"WIRING_KEY": canary}
    fake_rigs.scenario["responses"] = [
        ["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK],
        ["find /etc/llamarig/credentials", "/etc/llamarig/credentials/chat.api-key\n/etc/llamarig/credentials/old.api-key"]]
    fake_rigs.scenario["files"] = {"/etc/llamarig/credentials/old.api-key": "sk-old\n",
                                   "/etc/llamarig/credentials/chat.api-key": "sk-before\n"}
    run = fake_rigs.deploy(env=deployed_env)
    assert run.returncode == 0, run.output[-3000:]
    assert run.puts()["/etc/llamarig/credentials/.chat.api-key.tmp"] == canary + "\n"
    assert run.ran("chmod 600 /etc/llamarig/credentials/.chat.api-key.tmp && mv")
    assert run.ran("rm -f /etc/llamarig/credentials/old.api-key")
    assert not run.ran("rm -f /etc/llamarig/credentials/chat.api-key")
    assert canary not in run.output and not [c for c in run.commands() if canary in c]
    assert canary not in run.puts()[UNIT] and "LoadCredential=api-key:/etc/llamarig/credentials/chat.api-key" in run.puts()[UNIT]


def test_a_rig_with_a_tune_running_is_refused_before_any_operation(fake_rigs):
    fake_rigs.scenario["responses"] = [["llamarig-tune-$s-guard.service", "chat 2026-12-02 05:38:11"],
                                       ["--help 2>&1", HELP], ["llamarig-check.py --expect", CHECK_OK]]
    run = fake_rigs.deploy()
    assert run.returncode != 0 and "no `llamarig tune` running on the rig (one of chat began 2026-12-02 05:38:11" \
        in run.output, run.output[-3000:]
    assert "no host was changed" in run.output
    assert not [c for c in run.commands() if "llamarig-build.sh" in c or "systemctl start" in c or "apt-get" in c]
