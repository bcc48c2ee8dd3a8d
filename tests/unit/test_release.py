"""The one resolver (llamarig.release.resolve) and the release assembled from it (llamarig.release.assemble),
with lookups made here: no git, no Hub, no rig."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from llamarig.commands import cli
from llamarig.hostdata.validate import validate_host
from llamarig.lookups.gitref import GitRefError
from llamarig.lookups.hub import HubError, HubFile, ResolvedModel
from llamarig.lookups.secrets import SecretError
from llamarig.release import lock
from llamarig.release.assemble import RigFacts, assumed_facts, facts_from_rig, lock_problems, make_release
from llamarig.release.resolve import LockUse, Lookups, resolve_rig
from llamarig.release.unit import systemd_split

from .helpers import rig

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "c0ffee" + "0" * 34
MODEL_COMMIT = "beef" + "1" * 36


def hub_model(name, model, endpoint, token):
    return ResolvedModel(model["repo"], model["revision"], MODEL_COMMIT,
                         [HubFile("gemma-00001-of-00003.gguf", 10, "a" * 64)], model["file"] or "picked.gguf", endpoint)


def lookups(**overrides) -> Lookups:
    def never(*args):
        raise AssertionError("not to be looked up")
    base = dict(git_ref=lambda url, ref: COMMIT, hub_model=hub_model, headers=never,
                hub_token=lambda doc: None, api_key=lambda svc: None)
    base.update(overrides)
    return Lookups(**base)


def doc_of(**overrides) -> dict:
    doc, problems = validate_host("r1", rig(**overrides))
    assert problems == []
    return doc


def test_a_resolved_rig_has_the_commit_the_models_and_the_secrets():
    doc = doc_of(services=[{"name": "chat", "model": "gemma", "port": 8080, "api_key_env": "K"}])
    r, problems = resolve_rig("r1", doc, lookups(api_key=lambda svc: "sk-1", hub_token=lambda d: "hf-1"))
    assert problems == [] and r.commit == COMMIT and r.models["gemma"].commit == MODEL_COMMIT
    assert r.api_keys == {"chat": "sk-1"} and r.hub_token == "hf-1" and r.placements == {} and r.notes == []
    assert "sk-1" not in repr(r) and "hf-1" not in repr(r)


def test_what_cannot_be_resolved_is_a_problem_naming_the_host_and_key():
    def bad_ref(url, ref):
        raise GitRefError("no such branch or tag")

    def bad_hub(*args):
        raise HubError("model gemma: repository acme/gemma-GGUF not found")

    r, problems = resolve_rig("r1", doc_of(), lookups(git_ref=bad_ref, hub_model=bad_hub))
    assert r is None
    assert [(p.host, p.path) for p in problems] == [("r1", "build_ref"), ("r1", "models.gemma")]

    def bad_key(svc):
        raise SecretError("the environment variable K is not set on the controller")

    doc = doc_of(services=[{"name": "chat", "model": "gemma", "port": 8080, "api_key_env": "K"}])
    r, problems = resolve_rig("r1", doc, lookups(api_key=bad_key))
    assert r is None and [p.path for p in problems] == ["services[0].api_key_env"]


def test_a_preview_keeps_the_declared_names_of_what_it_cannot_look_up_and_says_so():
    def offline(*args):
        raise GitRefError("could not resolve host")

    def no_hub(*args):
        raise HubError("could not reach the Hub")

    r, problems = resolve_rig("r1", doc_of(), lookups(git_ref=offline, hub_model=no_hub), preview=True)
    assert problems == [] and r.commit == "master" and r.models["gemma"].commit == "main"
    assert len(r.notes) == 2 and "build_ref master is not resolved" in r.notes[0]
    u = make_release(r, RigFacts(False)).units["llamarig-chat.service"]
    assert u.expect["props"]["model_path"] == "/var/lib/llamarig/models/gemma/*/gemma-00001-of-00003.gguf"
    assert u.expect["props"]["model_path_match"] == "fnmatch"


def frozen_entry(doc, facts=RigFacts(False)) -> dict:
    r, _ = resolve_rig("r1", doc, lookups())
    rel = make_release(r, facts)
    return lock.rig_entry(doc, r.commit, facts.cuda, list(facts.archs), rel.build["cmake_args"], rel.build["key"],
                          r.models, rel.unit_texts())


def test_a_frozen_rig_looks_nothing_up_and_runs_what_its_lock_holds():
    doc = doc_of()
    entry = frozen_entry(doc)
    entry["build"]["commit"] = "f" * 40
    never = lookups(git_ref=lambda *a: pytest.fail("git asked"), hub_model=lambda *a: pytest.fail("Hub asked"))
    r, problems = resolve_rig("r1", doc, never, LockUse(Path("rigs.lock"), entry))
    assert problems == [] and r.commit == "f" * 40 and r.frozen is entry
    assert [f.path for f in r.models["gemma"].files] == ["gemma-00001-of-00003.gguf"]


def test_a_frozen_rig_without_an_entry_or_with_data_the_lock_lacks_is_refused():
    doc = doc_of()
    r, problems = resolve_rig("r1", doc, lookups(), LockUse(Path("rigs.lock"), None))
    assert r is None and [p.path for p in problems] == ["rigs.lock"]
    entry = frozen_entry(doc)
    changed = doc_of(build_ref="b7100")
    r, problems = resolve_rig("r1", changed, lookups(), LockUse(Path("rigs.lock"), entry))
    assert r is None and [(p.path, p.value) for p in problems] == [("build_ref", "b7100")]
    assert "run `llamarig lock --update`" in problems[0].expected


def test_reuse_keeps_what_the_lock_covers_and_resolves_the_rest():
    doc = doc_of()
    entry = frozen_entry(doc)
    entry["build"]["commit"] = "e" * 40
    r, _ = resolve_rig("r1", doc, lookups(git_ref=lambda *a: pytest.fail("git asked")), LockUse("p", entry, "reuse"))
    assert r.commit == "e" * 40
    r, _ = resolve_rig("r1", doc_of(build_ref="b7100"), lookups(), LockUse("p", entry, "reuse"))
    assert r.commit == COMMIT


def test_lock_problems_name_a_build_key_a_unit_and_the_rigs_facts_that_differ():
    doc = doc_of()
    entry = frozen_entry(doc)
    use = LockUse(Path("rigs.lock"), entry)
    r, _ = resolve_rig("r1", doc, lookups(), use)
    rel = make_release(r, RigFacts(False))
    assert lock_problems(r, rel, RigFacts(False)) == []
    assert [p.path for p in lock_problems(r, rel, RigFacts(True, ("86",)))] == ["gpus"]
    entry["build"]["key"] = "llama.cpp-000000000000-0000000000"
    assert [p.path for p in lock_problems(r, rel)] == ["build_cmake_options"]
    entry["build"]["key"] = rel.build["key"]
    entry["units"]["llamarig-chat.service"] = "sha256:" + "0" * 64
    entry["units"]["llamarig-gone.service"] = "sha256:" + "1" * 64
    found = lock_problems(r, rel)
    assert [(p.path, p.value) for p in found] == [("services", "llamarig-chat.service"), ("services", "llamarig-gone.service")]
    assert "rendered differently" in found[0].expected and "no longer declared" in found[1].expected


def test_a_release_holds_the_build_record_as_json_and_each_unit_its_argv_and_digest():
    doc = doc_of(build_cmake_options=['-DGGML_NATIVE=OFF', '-DCMAKE_CXX_FLAGS=-DX="a b"'])
    r, _ = resolve_rig("r1", doc, lookups())
    rel = make_release(r, RigFacts(True, ("86", "89")))
    record = json.loads(rel.build["record"])
    assert record["commit"] == COMMIT and record["key"] == rel.build["key"]
    assert '-DCMAKE_CXX_FLAGS=-DX="a b"' in record["cmake_args"] and "-DCMAKE_CUDA_ARCHITECTURES=86;89" in record["cmake_args"]
    u = rel.units["llamarig-chat.service"]
    line = next(x for x in u.text.splitlines() if x.startswith("ExecStart="))
    assert systemd_split(line[len("ExecStart="):]) == [u.binary, *u.argv]
    assert u.binary == f"{rel.build['prefix']}/bin/llama-server" and u.digest == lock.unit_digest(u.text)
    assert rel.power_unit and "llamarig-power" not in u.path


def test_the_rigs_facts_decide_the_build():
    doc = doc_of()
    assert facts_from_rig(doc, None, []) == (RigFacts(False), None)
    assert facts_from_rig(doc, "/usr/bin/nvcc", ["8.6", "8.9"]) == (RigFacts(True, ("86", "89")), None)
    facts, why = facts_from_rig(doc, "/usr/bin/nvcc", [])
    assert facts is None and "declare them" in why
    assert assumed_facts(doc)[0] == RigFacts(True, ("86",))  # 3090s: the preview's guess, said so
    assert assumed_facts(doc_of(gpus=[]))[0] == RigFacts(False)


def test_render_prints_exactly_the_locked_unit_and_labels_a_preview(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    inv = tmp_path / "inv.py"
    inv.write_text(textwrap.dedent("""\
        rigs = [("r1", {"gpus": [], "build_git_url": "git://127.0.0.1:9/none", "build_ref": "%s",
                        "hub_endpoint": "http://127.0.0.1:9",
                        "models": {"gemma": {"repo": "acme/gemma-GGUF", "file": "g.gguf"}},
                        "services": [{"name": "chat", "model": "gemma", "port": 8080}]})]
    """ % COMMIT))
    assert cli.main(["render", str(inv)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# --- r1: /etc/systemd/system/llamarig-chat.service: PREVIEW") and "llamarig lock" in out
    from llamarig.hostdata.inventory import load_checked
    _, docs = load_checked(str(inv))
    entry = frozen_entry(docs["r1"])
    lock.write(tmp_path / "rigs.lock", {"r1": entry}, str(inv))
    assert cli.main(["render", str(inv)]) == 0
    out = capsys.readouterr().out
    header, _, text = out.partition("\n")
    digest = entry["units"]["llamarig-chat.service"]
    assert header == f"# --- r1: /etc/systemd/system/llamarig-chat.service: exactly what a deploy installs ({digest}, as rigs.lock records)"
    assert lock.unit_digest(text[:-1]) == digest  # print adds one newline after the unit's own


def test_check_names_what_the_lock_does_not_cover(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    inv = tmp_path / "inv.py"
    text = textwrap.dedent("""\
        rigs = [("r1", {"gpus": [], "build_git_url": "git://127.0.0.1:9/none", "build_ref": "%s",
                        "hub_endpoint": "http://127.0.0.1:9",
                        "models": {"gemma": {"repo": "acme/gemma-GGUF", "file": "g.gguf"}},
                        "services": [{"name": "chat", "model": "gemma", "port": 8080}]})]
    """ % COMMIT)
    inv.write_text(text)
    from llamarig.hostdata.inventory import load_checked
    _, docs = load_checked(str(inv))
    lock.write(tmp_path / "rigs.lock", {"r1": frozen_entry(docs["r1"])}, str(inv))
    assert cli.main(["check", str(inv)]) == 0
    capsys.readouterr()
    inv.write_text(text.replace('"build_ref": "%s"' % COMMIT, '"build_ref": "b7100"'))
    assert cli.main(["check", str(inv)]) == 1
    err = capsys.readouterr().err
    assert "r1: build_ref = 'b7100': expected what rigs.lock was locked from" in err and "llamarig lock --update" in err


def test_a_model_whose_architecture_the_fork_does_not_load_stops_the_rig_by_the_model_key(tmp_path):
    from llamarig.planner.gguf import read_model
    from testbed import synth
    header = read_model(synth.write_model(str(tmp_path / "m.gguf"), synth.dense_llama(arch="llama-from-the-future"))[0])
    doc = doc_of(gpus=[{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}],
                 services=[{"name": "chat", "model": "gemma", "port": 8080, "placement": "auto",
                            "ctx_size": 8192}])
    r, problems = resolve_rig("r1", doc, lookups(headers=lambda model, token: header))
    assert r is None and len(problems) == 1
    text = str(problems[0])
    assert text.startswith("r1: models.gemma = ") and "a model llama.cpp loads and llamarig's planner sizes" in text
    assert "the model's architecture 'llama-from-the-future' is not one llama.cpp" in text
