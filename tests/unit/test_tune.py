"""``llamarig tune``'s controller side without a rig: candidates, their releases and transient units, the
schedule, the ranking, and the command's refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamarig.release.assemble import RigFacts
from llamarig.release.unit import API_KEY_ARG
from llamarig.tune import candidates as cands
from llamarig.tune.candidates import Candidate, combined, generate, power_candidates
from llamarig.tune.engine import Engine, Settings
from llamarig.tune.prepare import Prepared, host_keys, prepare
from llamarig.tune.rank import rank, winner
from llamarig.tune.report import table
from llamarig.tune.transient import PORT_WORD, TransientError, bind, candidate_argv, expand, unit_properties

from .helpers import unit_text
from .test_release import doc_of, frozen_entry, lookups

FACTS = {"cpus": 16, "cores": 8, "power": {"0": {"limit": 280.0, "min": 100.0, "max": 350.0, "default": 350.0}}}


def labels(out):
    return [c.label for c in out]


# --- candidates ------------------------------------------------------------------------------------

def test_each_axis_varies_one_key_and_never_repeats_the_declared_value():
    doc = doc_of(services=[{"name": "chat", "model": "gemma", "port": 8080, "threads": 8, "ctx_size": 2048,
                            "gpus": [0]}])
    svc = doc["services"][0]
    out = generate(doc, svc, FACTS, ["threads", "threads_batch", "ubatch", "flash_attn"])
    assert out[0].label == "declared" and out[0].service == {} and out[0].id == "c0"
    assert labels(out)[1:3] == ["threads 4", "threads 16"]                 # half the cores, all CPUs; 8 declared
    assert "threads_batch 16" in labels(out) and "threads_batch 8" not in labels(out)
    ubatches = [c.service["ubatch_size"] for c in out if c.axis == "ubatch"]
    assert ubatches == [128, 256, 1024, 2048]                              # 512 declared; 4096 > ctx 2048
    assert all(len(c.service) == 1 or c.axis == "ubatch" for c in out[1:])
    assert {c.service.get("flash_attn") for c in out if c.axis == "flash_attn"} == {"on", "off"}
    assert len({c.id for c in out}) == len(out)


def test_a_ubatch_above_the_batch_raises_the_batch_with_it():
    doc = doc_of(services=[{"name": "chat", "model": "gemma", "port": 8080, "batch_size": 1024}])
    out = generate(doc, doc["services"][0], FACTS, ["ubatch"])
    big = next(c for c in out if c.service.get("ubatch_size") == 4096)
    assert big.service == {"ubatch_size": 4096, "batch_size": 4096}
    assert next(c for c in out if c.service.get("ubatch_size") == 1024).service == {"ubatch_size": 1024}


def test_ik_options_and_the_margin_are_tried_only_where_they_apply():
    base = dict(services=[{"name": "chat", "model": "gemma", "port": 8080, "placement": "auto", "ctx_size": 4096}])
    mainline = doc_of(**base)
    ik = doc_of(build_fork="ik_llama.cpp", build_git_url="https://github.com/ikawrakow/ik_llama.cpp", **base)
    assert not [c for c in generate(mainline, mainline["services"][0], FACTS, ["fork_options"]) if c.axis]
    ik_out = generate(ik, ik["services"][0], FACTS, ["fork_options", "margin"])
    assert {"run_time_repack true", "grouped_expert_routing true", "merge_qkv true"} <= set(labels(ik_out))
    assert not any(c.service.get("mla_use") for c in ik_out)                  # not an MLA model
    assert any(c.service.get("mla_use") for c in generate(ik, ik["services"][0], FACTS, ["fork_options"],
                                                          arch="deepseek2"))
    assert [c.rig for c in ik_out if c.axis == "margin"] == [{"gpu_margin_mib": 768}, {"gpu_margin_mib": 512}]
    cpu = doc_of(gpus=[], **base)
    assert not [c for c in generate(cpu, cpu["services"][0], FACTS, ["margin"]) if c.axis]


def test_power_steps_lie_within_each_cards_range_and_skip_the_limit_it_has():
    steps = power_candidates([0], FACTS["power"], 1)
    assert [c.power for c in steps] == [{0: 350.0}, {0: 298.0}, {0: 245.0}, {0: 193.0}]
    at_max = {"0": dict(FACTS["power"]["0"], limit=350.0)}
    assert {0: 350.0} not in [c.power for c in power_candidates([0], at_max, 1)]
    narrow = {"0": {"limit": 300.0, "min": 250.0, "max": 350.0, "default": 350.0}}
    assert min(c.power[0] for c in power_candidates([0], narrow, 1)) == 250.0
    assert power_candidates([0, 1], FACTS["power"], 1) == []  # a card nvidia-smi did not report: no step


def test_the_combination_holds_every_axis_best_change():
    a = Candidate("c1", "threads 4", "threads", {"threads": 4})
    b = Candidate("c2", "ubatch_size 1024", "ubatch", {"ubatch_size": 1024})
    m = Candidate("c3", "gpu_margin_mib 512", "margin", rig={"gpu_margin_mib": 512})
    both = combined({"threads": a, "ubatch": b, "margin": m}, 9)
    assert both.id == "c9" and both.service == {"threads": 4, "ubatch_size": 1024}
    assert both.rig == {"gpu_margin_mib": 512} and both.axis is None
    assert combined({"threads": a}, 9) is None



def test_a_combination_on_another_build_names_that_build_and_its_shared_arguments_once():
    picks = {"fork_options": Candidate("b1c5", "ik_llama.cpp: run_time_repack true [-cuda fusion=0]", "fork_options",
                                       {"run_time_repack": True}),
             "threads": Candidate("b1c2", "ik_llama.cpp: threads 16 [-cuda fusion=0]", "threads", {"threads": 16})}
    both = combined(picks, 11)
    assert both.id == "b1c11"
    assert both.label == "ik_llama.cpp: run_time_repack true + threads 16 [-cuda fusion=0]"
    mixed = {"threads": Candidate("c1", "threads 4", "threads", {"threads": 4}),
             "ubatch": Candidate("c2", "ubatch_size 1024 [x]", "ubatch", {"ubatch_size": 1024})}
    assert combined(mixed, 3).label == "threads 4 + ubatch_size 1024 [x]"   # nothing shared: said as it is


def test_the_table_shows_whole_labels_so_a_combination_is_told_from_its_first_change():
    def raws(values):
        return [{"runs": [{"depth": 64, "rep": i, "prompt_tokens": 64, "prompt_n": 64, "prompt_ms": 10.0,
                           "predicted_n": 8, "predicted_ms": 10.0, "predicted_per_second": v}
                          for i, v in enumerate(values)], "power": None}]

    long = "ik_llama.cpp: run_time_repack true [-cuda fusion=0]"
    combo = "ik_llama.cpp: run_time_repack true + threads 16 + threads_batch 16 [-cuda fusion=0]"
    ranked = rank({"c0": "declared", "c1": long, "c2": combo},
                  {"c0": raws([50, 51]), "c1": raws([60, 61]), "c2": raws([68, 69])}, {}, {}, "decode", 64)
    text = table("decode", ranked, "decode", [])
    rows = [line for line in text.splitlines() if "run_time_repack" in line]
    assert len(rows) == 2 and any(combo in r for r in rows) and any(long + " " in r for r in rows)
    assert len({line.index(" t/s") for line in text.splitlines()[1:2]}) == 1

# --- a candidate's release and transient unit --------------------------------------------------------

def test_a_candidate_is_rendered_by_the_deploys_own_path_under_the_lock():
    doc = doc_of(services=[{"name": "chat", "model": "gemma", "port": 8080, "threads": 8, "host": "0.0.0.0",
                            "api_key_env": "KEY"}])
    entry = frozen_entry(doc)
    locks = (Path("rigs.lock"), {"r1": entry})
    key = entry["build"]["key"]
    never_git = lookups(git_ref=lambda *a: pytest.fail("git asked"), api_key=lambda svc: None)
    p = prepare("r1", doc, "chat", Candidate("c3", "threads 4", "threads", {"threads": 4}), locks, never_git, key)
    assert p.problem is None
    assert p.argv[p.argv.index("--threads") + 1] == "4"
    assert p.argv[-4:] == ["--host", "127.0.0.1", "--port", PORT_WORD] and p.argv.count("--port") == 1
    # the API key's credential path of the candidate's own unit
    assert "/run/credentials/llamarig-tune-chat-c3.service/api-key" in p.argv and API_KEY_ARG not in p.argv
    assert p.unit == "llamarig-tune-chat-c3.service" and p.binary.endswith("/bin/llama-server")
    assert "User=llama" in p.properties and "ProtectSystem=strict" in p.properties
    assert not any(x.startswith(("Restart=", "ExecStart=", "StartLimit")) for x in p.properties)
    assert p.host_keys == {"services": [{"name": "chat", "threads": 4}]}


def test_a_candidate_the_data_refuses_or_that_needs_another_build_is_not_run():
    doc = doc_of()
    entry = frozen_entry(doc)
    locks = (Path("rigs.lock"), {"r1": entry})
    key = entry["build"]["key"]
    bad = prepare("r1", doc, "chat", Candidate("c1", "x", "threads", {"threads": 0}), locks, lookups(), key)
    assert bad.problem and "threads" in bad.problem and not bad.argv
    other = prepare("r1", doc, "chat", Candidate("c2", "y", None, rig={"build_cmake_options": ["-DX=1"]}), locks,
                    lookups(), key)
    assert other.problem.startswith("needs another build")


def test_transient_properties_expand_the_specifiers_a_system_service_would():
    text = unit_text("r1", doc_of(services=[{"name": "chat", "model": "gemma", "port": 8080, "gpus": [0]}]),
                     facts=RigFacts(True, ("86",)))
    props, argv = bind(unit_properties(text), ["--api-key-file", API_KEY_ARG, "100%"], "u.service")
    assert "WorkingDirectory=/var/lib/llamarig/chat" in props
    assert "Environment=CUDA_CACHE_PATH=/var/cache/llamarig/chat/cuda" in props
    assert "DeviceAllow=char-nvidia rw" in props and "KillSignal=SIGINT" in props
    assert argv == ["--api-key-file", "/run/credentials/u.service/api-key", "100%"]
    assert not any("%" in p for p in props)
    assert expand("a%%b", "u") == "a%b"
    with pytest.raises(TransientError):
        expand("%h/x", "u")
    assert candidate_argv(["--port", "80", "--host=::", "-m", "x"]) == ["-m", "x", "--host", "127.0.0.1",
                                                                        "--port", PORT_WORD]


# --- the schedule and the ranking ----------------------------------------------------------------------

class FakeRunner:
    """Decode speeds by candidate id; ids in ``broken`` fail to start; every call recorded."""

    def __init__(self, speeds: dict, broken=(), spread=0.5, step_s=10.0, clock=None):
        self.speeds, self.broken, self.spread, self.step_s, self.clock = speeds, set(broken), spread, step_s, clock
        self.calls = []

    def start(self, p, deadline_s):
        self.calls.append(("start", p.candidate.id))
        self.clock.t += self.step_s / 2
        if p.candidate.id in self.broken:
            return {"ok": False, "failure": {"kind": "out of memory", "detail": "cudaMalloc failed"}}
        return {"ok": True, "id": p.candidate.id}

    def bench(self, started, spec):
        self.clock.t += self.step_s / 2
        v = self.speeds[started["id"]]
        runs = [{"depth": spec["depths"][0], "rep": i, "prompt_tokens": 100, "prompt_n": 100, "prompt_ms": 100.0,
                 "predicted_n": 10, "predicted_ms": 100.0, "prompt_per_second": 1000.0,
                 "predicted_per_second": v + (self.spread if i % 2 else -self.spread)}
                for i in range(spec["repetitions"])]
        return {"ok": True, "runs": runs, "power": None}

    def stop(self, started):
        self.calls.append(("stop", started["id"]))

    def set_power(self, limits):
        self.calls.append(("power", dict(limits)))
        return {"ok": True}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def prepared(ids_axes):
    return [Prepared(Candidate(cid, label, axis), binary="b", argv=[cid]) for cid, label, axis in ids_axes]


def test_round_one_measures_all_then_finalists_in_other_orders_and_a_failure_is_never_retried():
    clock = Clock()
    runner = FakeRunner({"c0": 50, "c1": 60, "c2": 55, "c3": 40, "c5": 70}, broken={"c4"}, clock=clock)
    ps = prepared([("c0", "declared", None), ("c1", "threads 4", "threads"), ("c2", "ubatch 1024", "ubatch"),
                   ("c3", "ubatch 128", "ubatch"), ("c4", "ubatch 4096", "ubatch")])
    made = []

    def combine(best, next_id):
        made.append(sorted(best))
        return Prepared(Candidate(f"c{next_id}", "combined", None), binary="b", argv=["combo"])

    s = Settings(repetitions=4, rounds=3, finalists=2, minutes=60, depth=512)
    out = Engine(runner, ps, s, combine=combine, say=lambda t: None, clock=clock).run()
    starts = [cid for op, cid in runner.calls if op == "start"]
    assert starts[:5] == ["c0", "c1", "c2", "c3", "c4"]
    assert starts.count("c4") == 1 and "c4" in out.failures and out.failures["c4"]["kind"] == "out of memory"
    assert made == [["threads", "ubatch"]]                       # the best of each axis that beat the declared
    later = [starts[5:9], starts[9:13]]
    assert all(sorted(r) == ["c0", "c1", "c2", "c5"] for r in later) and later[0] != later[1]
    assert "c3" not in starts[5:]                                # not a finalist
    ranked = rank({p.candidate.id: p.candidate.label for p in out.prepared.values()}, out.measured, out.failures,
                  out.not_run, "decode", 512)
    assert [r.id for r in ranked][:4] == ["c5", "c1", "c2", "c0"] and ranked[-1].status == "failed"
    assert winner(ranked).id == "c5" and ranked[0].score.n == 8


def test_changes_are_combined_on_the_best_build_against_its_own_declaration():
    clock = Clock()
    runner = FakeRunner({"c0": 50, "fit": 55, "c1": 52, "b1c0": 70, "b1c1": 80, "b1c2": 75, "b1c3": 60, "b1c7": 85},
                        clock=clock)
    ps = prepared([("c0", "declared", None), ("fit", "reference", "reference"), ("c1", "threads 8", "threads"),
                   ("b1c0", "ik: declared", "fork"), ("b1c1", "ik: rtr", "fork_options"),
                   ("b1c2", "ik: margin 512", "margin"), ("b1c3", "ik: ubatch 4096", "ubatch")])
    made = []

    def combine(best, next_id):
        made.append({axis: c.id for axis, c in best.items()})
        return Prepared(combined(best, next_id), binary="b", argv=["combo"])

    s = Settings(repetitions=4, rounds=2, finalists=1, minutes=60, depth=512, keep=["fit"])
    out = Engine(runner, ps, s, combine=combine, say=lambda t: None, clock=clock).run()
    # the ik build's declaration beats the serving one: its own changes that beat it, and nothing else (not
    # the serving build's threads, not ik's ubatch that beats c0 only, not the reference)
    assert made == [{"fork_options": "b1c1", "margin": "b1c2"}]
    extra = out.prepared["b1c7"]
    assert extra.candidate.label == "ik: rtr + margin 512" and "b1c7" in out.measured


def test_changes_are_combined_on_the_build_of_the_best_candidate_though_its_declaration_ranks_second():
    clock = Clock()
    # the serving build's declaration edges ik's (within any noise), but ik's repack is far ahead of all
    runner = FakeRunner({"c0": 52, "fit": 55, "c1": 54, "c2": 53, "b1c0": 51, "b1c1": 65, "b1c2": 53,
                         "b1c3": 50, "b1c8": 70}, clock=clock)
    ps = prepared([("c0", "declared", None), ("fit", "reference", "reference"), ("c1", "threads 16", "threads"),
                   ("c2", "threads_batch 16", "threads_batch"), ("b1c0", "ik: declared", "fork"),
                   ("b1c1", "ik: rtr", "fork_options"), ("b1c2", "ik: threads 16", "threads"),
                   ("b1c3", "ik: threads 8", "threads")])
    made = []

    def combine(best, next_id):
        made.append({axis: c.id for axis, c in best.items()})
        return Prepared(combined(best, next_id), binary="b", argv=["combo"])

    s = Settings(repetitions=4, rounds=2, finalists=1, minutes=60, depth=512, keep=["fit"])
    Engine(runner, ps, s, combine=combine, say=lambda t: None, clock=clock).run()
    # ik's changes against ik's own declaration (threads 8 is under it), none of the serving build's
    assert made == [{"fork_options": "b1c1", "threads": "b1c2"}]


def test_nothing_starts_that_the_time_left_cannot_finish():
    clock = Clock()
    runner = FakeRunner({f"c{i}": 50 for i in range(6)}, clock=clock, step_s=40)
    ps = prepared([(f"c{i}", f"x{i}", "threads") for i in range(6)])
    out = Engine(runner, ps, Settings(minutes=2, rounds=3), say=lambda t: None, clock=clock).run()
    assert clock.t <= 120 and sorted(out.measured) == ["c0", "c1", "c2"]
    ranked = rank({p.candidate.id: p.candidate.label for p in ps}, out.measured, out.failures, out.not_run,
                  "decode", 4096)
    assert {r.status for r in ranked if r.id in ("c3", "c4", "c5")} == {"out of time"}


def test_two_candidates_that_run_the_same_arguments_are_measured_once():
    clock = Clock()
    runner = FakeRunner({"c0": 50, "c1": 50}, clock=clock)
    ps = [Prepared(Candidate("c0", "declared", None), binary="b", argv=["same"]),
          Prepared(Candidate("c1", "gpu_margin_mib 768", "margin"), binary="b", argv=["same"])]
    out = Engine(runner, ps, Settings(rounds=1), say=lambda t: None, clock=clock).run()
    assert out.not_run == {"c1": "the same arguments as declared"} and sorted(out.measured) == ["c0"]


def test_a_power_candidate_sets_its_limits_and_the_next_one_puts_them_back():
    clock = Clock()
    runner = FakeRunner({"c0": 50, "c1": 49, "c2": 51}, clock=clock)
    ps = [Prepared(Candidate("c0", "declared", None), binary="b", argv=["a"]),
          Prepared(Candidate("c1", "threads 1", "threads"), binary="b", argv=["b"]),
          Prepared(Candidate("c2", "power GPU 0 200 W", "power", power={0: 200.0}), binary="b", argv=["a"])]
    Engine(runner, ps, Settings(rounds=1), say=lambda t: None, clock=clock).run()
    ops = [c for c in runner.calls if c[0] in ("power", "start")]
    assert ops == [("start", "c0"), ("power", {"0": 200.0}), ("start", "c2"), ("power", {}), ("start", "c1")]


def test_a_gain_within_the_noise_or_under_one_percent_is_not_a_winner():
    def raws(values):
        return [{"runs": [{"depth": 64, "rep": i, "prompt_tokens": 64, "prompt_n": 64, "prompt_ms": 10.0,
                           "predicted_n": 8, "predicted_ms": 10.0, "predicted_per_second": v}
                          for i, v in enumerate(values)], "power": None}]

    measured = {"c0": raws([50, 54, 46, 50]), "c1": raws([53, 57, 49, 53]), "c2": raws([50.3, 50.3, 50.3]),
                "c3": raws([70, 71, 69])}
    ranked = rank({"c0": "declared", "c1": "noisy", "c2": "flat", "c3": "fast"}, measured, {}, {}, "decode", 64)
    verdicts = {r.id: r.verdict for r in ranked}
    assert verdicts == {"c0": "baseline", "c1": "within noise", "c2": "within noise", "c3": "gain"}
    del measured["c3"]
    assert winner(rank({"c0": "d", "c1": "n", "c2": "f"}, measured, {}, {}, "decode", 64)) is None
    single = {"c0": raws([50]), "c1": raws([90])}
    assert winner(rank({"c0": "d", "c1": "x"}, single, {}, {}, "decode", 64)) is None  # noise unknown


def test_the_host_keys_of_a_winner_name_the_service_the_rig_keys_and_the_power_limits():
    c = Candidate("c9", "combo", None, {"threads": 4}, {"gpu_margin_mib": 512}, {1: 250.0})
    assert host_keys(c, "chat") == {"gpu_margin_mib": 512, "power_limits_w": {1: 250.0},
                                    "services": [{"name": "chat", "threads": 4}]}


# --- the command's refusals, before any rig is touched ----------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--host", "nope", "--service", "chat"], ["--host nope", "no such rig"]),
    (["--host", "demo", "--service", "nope"], ["--service nope", "services: chat"]),
    (["--host", "demo", "--service", "chat", "--axes", "threads,colour"], ["colour", "no such axis"]),
    (["--host", "demo", "--service", "chat", "--try", "port=1"], ["'port'", "not a service key"]),
    (["--host", "demo", "--service", "chat", "--try", "threads"], ["not KEY=VALUE"]),
    (["--host", "demo", "--service", "chat", "--repetitions", "1"], ["--repetitions"]),
])
def test_bad_arguments_are_refused_by_name_with_exit_2(tmp_path, capsys, args, words):
    from llamarig.commands import cli
    inventory = tmp_path / "inv.py"
    inventory.write_text('demo = [("demo", {"gpus": [], "models": {"gemma": {"repo": "a/b"}}, "services": '
                         '[{"name": "chat", "model": "gemma", "port": 8080}]})]\n')
    code = cli.main(["tune", str(inventory), *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert all(w in err for w in words), err
    assert "Traceback" not in err


def test_energy_and_power_need_gpus(tmp_path, capsys):
    from llamarig.commands import cli
    inventory = tmp_path / "inv.py"
    inventory.write_text('demo = [("demo", {"gpus": [], "models": {"gemma": {"repo": "a/b"}}, "services": '
                         '[{"name": "chat", "model": "gemma", "port": 8080}]})]\n')
    for extra in (["--objective", "energy"], ["--power"]):
        code = cli.main(["tune", str(inventory), "--host", "demo", "--service", "chat", *extra])
        assert code == 2 and "uses no GPU" in capsys.readouterr().err


def test_the_axes_are_documented():
    assert set(cands.DEFAULT_AXES) < set(cands.AXES) and "power" not in cands.DEFAULT_AXES


def test_another_build_is_tried_with_its_own_keys_and_never_at_other_power_limits():
    from llamarig.tune.candidates import with_forks
    ik = {"build_fork": "ik_llama.cpp", "build_git_url": "https://github.com/ikawrakow/ik_llama.cpp",
          "build_ref": "main"}
    doc = doc_of(tune_forks=[ik], services=[{"name": "chat", "model": "gemma", "port": 8080, "threads": 8,
                                              "gpus": [0]}])
    out = with_forks(doc, doc["services"][0], FACTS, ["threads", "fork_options", "power"])
    other = [c for c in out if c.id.startswith("b1")]
    assert other[0].id == "b1c0" and other[0].label == "ik_llama.cpp: declared" and other[0].axis == "fork"
    assert all(c.rig["build_fork"] == "ik_llama.cpp" and c.rig["build_ref"] == "main" for c in other)
    assert all(c.rig["build_targets"] == doc["build_targets"] for c in other)      # the rig's, when not given
    assert "ik_llama.cpp: run_time_repack true" in labels(other)
    assert not any(c.power for c in other) and any(c.power for c in out if not c.id.startswith("b"))
    assert len({c.id for c in out}) == len(out)
    keys = host_keys(other[0], "chat")
    assert keys["build_fork"] == "ik_llama.cpp" and keys["build_git_url"] == ik["build_git_url"]


def test_a_rig_whose_unit_is_not_the_inventorys_is_refused_before_it_is_touched():
    import hashlib
    from types import SimpleNamespace
    from llamarig.tune.checks import runs_the_release
    unit = SimpleNamespace(path="/etc/systemd/system/llamarig-chat.service", text="[Unit]\n")
    asked = []

    def run(command, timeout):
        asked.append(command)
        return 0, hashlib.sha256(b"[Unit]\n").hexdigest() + "  /etc/x\n", ""

    assert runs_the_release(run, unit) is None and asked == ["sha256sum /etc/systemd/system/llamarig-chat.service"]
    assert "differs" in runs_the_release(lambda c, t: (0, "0" * 64 + "  x\n", ""), unit)
    assert "missing" in runs_the_release(lambda c, t: (1, "", "No such file"), unit)
    assert "deploy first" in runs_the_release(lambda c, t: (1, "", ""), unit)


def test_an_out_of_memory_candidate_tells_what_the_planner_predicted_and_its_margin():
    from llamarig.tune.report import margin_notes
    p = Prepared(Candidate("c4", "gpu_margin_mib 512", "margin", rig={"gpu_margin_mib": 512}),
                 predicted_mib=[{"device": "CUDA0", "budget": 24576, "total": 23900}])
    q = Prepared(Candidate("c5", "ubatch_size 4096", "ubatch", {"ubatch_size": 4096}),
                 predicted_mib=[{"device": "CUDA0", "budget": 24576, "total": 23000}])
    failures = {"c4": {"kind": "out of memory", "detail": "cudaMalloc failed"},
                "c5": {"kind": "failed to start", "detail": "exited"}}
    notes = margin_notes(failures, {"c4": p, "c5": q}, 1024)
    assert notes == ["gpu_margin_mib 512: out of memory where the planner predicted CUDA0 23900 of 24576 MiB with a "
                     "margin of 512 MiB: that margin is too small for it"]


@pytest.mark.parametrize("log, kind, detail", [
    ("load ok\nCUDA error: an illegal memory access was encountered\nggml-cuda.cu:132: CUDA error\n", "crashed",
     "CUDA error: an illegal memory access was encountered"),
    ("CUDA error: out of memory\n  current device: 0\n", "out of memory", "CUDA error: out of memory"),
    ("slot launch\nGGML_ASSERT(n_tokens <= n_batch) failed\n", "crashed", "GGML_ASSERT(n_tokens <= n_batch) failed"),
    ("warning: failed to allocate 512 MiB of pinned memory\nslot launch\n", "not measured", "no answer"),
    ("", "not measured", "no answer"),
])
def test_a_measurement_without_figures_is_named_by_the_candidates_own_log(log, kind, detail):
    from llamarig.tune.engine import failure_of
    failure = failure_of({"ok": False, "error": "no answer", "log": log})
    assert failure["kind"] == kind and failure["detail"].startswith(detail)
    assert failure.get("log", "") == log


def test_a_run_time_out_of_memory_tells_the_planner_margin_too():
    from llamarig.tune.report import margin_notes

    class Crashing(FakeRunner):
        def bench(self, started, spec):
            if started["id"] == "c1":
                return {"ok": False, "error": "/completion gave no answer",
                        "log": "CUDA error: out of memory\n  in function ggml_cuda_pool_alloc\n"}
            return super().bench(started, spec)

    clock = Clock()
    runner = Crashing({"c0": 50, "c1": 60}, clock=clock)
    ps = [Prepared(Candidate("c0", "declared", None), binary="b", argv=["c0"]),
          Prepared(Candidate("c1", "gpu_margin_mib 512", "margin", rig={"gpu_margin_mib": 512}), binary="b",
                   argv=["c1"], predicted_mib=[{"device": "CUDA0", "budget": 24576, "total": 23900}])]
    out = Engine(runner, ps, Settings(repetitions=2, rounds=1, minutes=60, depth=512), say=lambda t: None,
                 clock=clock).run()
    assert out.failures["c1"]["kind"] == "out of memory"
    assert margin_notes(out.failures, {p.candidate.id: p for p in ps}, 1024) == [
        "gpu_margin_mib 512: out of memory where the planner predicted CUDA0 23900 of 24576 MiB with a margin of "
        "512 MiB: that margin is too small for it"]


def test_on_a_rig_a_failed_measurement_brings_the_candidates_journal_and_is_named_by_it():
    from llamarig.tune.engine import failure_of
    from llamarig.tune.runners import RigRunner
    calls = []

    def run(command, timeout, on_line=None):
        calls.append(command)
        if "llamarig-bench" in command:
            return 1, '{"ok": false, "error": "/completion gave no answer in 120 s"}\n', ""
        if command.startswith("journalctl"):
            return 0, "load_tensors: done\nCUDA error: an illegal memory access was encountered\nabort\n", ""
        return 0, "", ""

    r = RigRunner(run, "chat", {"unit": "llamarig-chat.service", "url": "http://127.0.0.1:8080",
                                "api_key_file": None}, [0], 600, say=lambda t: None)
    raw = r.bench({"url": "http://127.0.0.1:41000", "unit": "llamarig-tune-chat-c3.service"}, {"depths": [512]})
    assert calls[-1] == "journalctl -u llamarig-tune-chat-c3.service -n 80 -o cat --no-pager"
    failure = failure_of(raw)
    assert failure["kind"] == "crashed"
    assert failure["detail"] == ("CUDA error: an illegal memory access was encountered (the measurement: "
                                 "/completion gave no answer in 120 s)")
