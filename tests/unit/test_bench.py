"""llamarig.bench: watts over a request's phases, tokens per kWh, the per-depth summary, the comparison with
an earlier run, the table, the charts and where results are kept."""

from __future__ import annotations

import json
import math

import pytest

from llamarig.bench import charts, store, table
from llamarig.bench.compare import compare, judge, provenance_changes
from llamarig.bench.energy import limits_seen, phases, tokens_per_kwh, window_watts
from llamarig.bench.summary import Stat, row_from_json, summarize
from llamarig.commands.bench import depths_arg, matches_release


def gpu(w, limit=350.0):
    return [w, limit, 1695.0, 9751.0, 30.0]


# one GPU: 100 W until t=1, then 300 W until t=3, then 200 W
STEPS = [[0.0, gpu(100.0)], [1.0, gpu(300.0)], [3.0, gpu(200.0)]]


def test_window_watts_is_the_time_weighted_mean_of_the_steps():
    assert window_watts(STEPS, 0.0, 1.0) == pytest.approx(100.0)
    assert window_watts(STEPS, 0.5, 2.0) == pytest.approx((0.5 * 100 + 1.0 * 300) / 1.5)
    assert window_watts(STEPS, 2.0, 5.0) == pytest.approx((1 * 300 + 2 * 200) / 3)
    assert window_watts(STEPS, -1.0, 0.5) == pytest.approx(100.0)  # the first reading stands for the time before
    assert window_watts(STEPS, 1.5, 1.5) == 300.0                    # an empty window: the reading at that time
    assert window_watts([], 0, 1) is None
    assert window_watts([[0.0, [None, 350.0, None, None, None]]], 0, 1) is None


def test_several_gpus_are_summed():
    two = [[0.0, gpu(150.0), gpu(90.0)], [1.0, gpu(150.0), gpu(90.0)]]
    assert window_watts(two, 0.2, 0.8) == pytest.approx(240.0)


def test_tokens_per_kwh_is_tokens_over_energy():
    # 30.81 t/s at 819.71 W, the six-3090 seed's 4K row: 135,310 tokens/kWh
    assert tokens_per_kwh(30.81, 819.71, 1.0) == pytest.approx(135310, rel=1e-4)
    assert tokens_per_kwh(100, 250.0, 2.0) == pytest.approx(100 / (250 * 2 / 3.6e6))
    assert tokens_per_kwh(100, None, 2.0) is None and tokens_per_kwh(100, 250.0, 0) is None


def test_phases_follow_the_servers_own_timings():
    run = {"t_start": 10.0, "prompt_ms": 500.0, "predicted_ms": 2000.0}
    assert phases(run) == {"prefill": (10.0, 10.5), "decode": (10.5, 12.5)}


def raw_result(draws=(200.0,)):
    """Two depths, three repetitions, speeds known exactly; power constant per GPU."""
    runs, t = [], 0.0
    speeds = {1024: [(1000.0, 50.0), (1100.0, 55.0), (900.0, 45.0)], 0: [(None, 60.0)] * 3}
    for rep in range(3):
        for depth in (0, 1024):
            pp, tg = speeds[depth][rep]
            prompt_n = max(depth, 1)
            prompt_ms = prompt_n / pp * 1000 if pp else 5.0
            predicted_ms = 128 / tg * 1000
            runs.append({"depth": depth, "rep": rep, "prompt_tokens": prompt_n, "t_start": t, "prompt_n": prompt_n,
                         "prompt_ms": prompt_ms, "predicted_n": 128, "predicted_ms": predicted_ms,
                         "cache_n": 0, "contended": False})
            t += (prompt_ms + predicted_ms) / 1000 + 0.1
    samples = [[x / 10, *[gpu(w) for w in draws]] for x in range(int(t * 10) + 2)]
    return {"runs": runs, "power": {"gpus": list(range(len(draws))), "samples": samples}}


def test_summary_rows_give_mean_and_sd_of_the_repetitions_and_energy_by_formula():
    rows = {r.depth: r for r in summarize(raw_result((150.0, 50.0)))}
    row = rows[1024]
    assert row.runs == 3 and row.not_prefilled == 0
    assert row.prefill_tps.mean == pytest.approx(1000.0) and row.prefill_tps.sd == pytest.approx(100.0)
    assert row.decode_tps.mean == pytest.approx(50.0) and row.decode_tps.sd == pytest.approx(5.0)
    assert row.ttft_ms.mean == pytest.approx(sum(1024 / pp * 1000 for pp in (1000, 1100, 900)) / 3)
    assert row.decode_w.mean == pytest.approx(200.0) and row.prefill_w.mean == pytest.approx(200.0)
    assert row.decode_tokens_per_kwh.mean == pytest.approx(50.0 * 3.6e6 / 200.0)
    assert row.prefill_tokens_per_kwh.mean == pytest.approx(1000.0 * 3.6e6 / 200.0)
    # depth 0 is a one-token prompt: no prefill figure, decode at an empty context
    assert rows[0].prefill_tps is None and rows[0].prefill_w is None and rows[0].decode_tps.mean == pytest.approx(60)
    assert rows[0].decode_tps.sd == pytest.approx(0.0)


def test_the_servers_own_rates_are_taken_where_it_gives_them():
    raw = raw_result()
    for run in raw["runs"]:
        run["predicted_per_second"] = (run["predicted_n"] - 1) / run["predicted_ms"] * 1000  # llama.cpp's n - 1
    row = {r.depth: r for r in summarize(raw)}[1024]
    assert row.decode_tps.mean == pytest.approx(50.0 * 127 / 128)
    assert row.decode_tokens_per_kwh.mean == pytest.approx(50.0 * 127 / 128 * 3.6e6 / 200.0)


def test_a_cached_prompt_or_a_run_without_gpus_is_said_so():
    raw = raw_result()
    raw["runs"][1]["prompt_n"] = 3  # the server reused 1021 tokens from a cache
    raw["power"] = None
    row = {r.depth: r for r in summarize(raw)}[1024]
    assert row.not_prefilled == 1
    assert row.decode_w is None and row.decode_tokens_per_kwh is None


def test_a_summary_survives_json():
    rows = summarize(raw_result())
    again = [row_from_json(json.loads(json.dumps(r.to_json()))) for r in rows]
    assert again == rows


def stat(mean, sd, n=3):
    return Stat(mean, sd, n)


def test_a_change_counts_only_beyond_twice_the_combined_noise():
    assert judge(stat(50, 1), stat(45, 1), True) == (pytest.approx(2 * math.sqrt(2)), "regression")
    assert judge(stat(50, 1), stat(48, 1), True)[1] == "within noise"
    assert judge(stat(50, 1), stat(56, 1), True)[1] == "gain"
    assert judge(stat(500, 10), stat(300, 10), False)[1] == "gain"      # a shorter TTFT is better
    assert judge(stat(50, None, 1), stat(10, 1), True) == (None, "noise unknown")


def test_compare_reports_each_figure_at_the_depths_both_ran():
    old = summarize(raw_result())
    slow = raw_result()
    for run in slow["runs"]:
        run["predicted_ms"] *= 2  # decode twice as slow
    changes = compare(old, summarize(slow))
    by = {(c.depth, c.figure): c for c in changes}
    assert by[(1024, "decode_tps")].verdict == "regression" and by[(1024, "decode_tps")].percent == pytest.approx(-50)
    assert by[(1024, "prefill_tps")].verdict == "within noise"
    assert by[(1024, "decode_tokens_per_kwh")].verdict == "regression"
    assert (0, "prefill_tps") not in by
    assert "depth 1024 decode_tps: 50 -> 25 (-50.0%" in by[(1024, "decode_tps")].line()
    assert compare(old, [r for r in summarize(slow) if r.depth == 4096]) == []


def test_provenance_changes_name_what_moved():
    old = {"server": {"build": {"commit": "a" * 40, "cmake_args": ["-DGGML_CUDA=ON"]}, "argv": ["x", "-t", "2"]},
           "release": {"model": {"commit": "c" * 40}}, "power_limits_w": {"0": [350.0]}}
    new = json.loads(json.dumps(old))
    assert provenance_changes(old, new) == []
    new["server"]["build"]["commit"] = "b" * 40
    new["server"]["argv"] = ["x", "-t", "1"]
    new["power_limits_w"] = {"0": [250.0]}
    assert provenance_changes(old, new) == [
        "build commit: aaaaaaaaaaaa -> bbbbbbbbbbbb", "server flags: -t 2 -> 1",
        "GPU power limits: {'0': [350.0]} -> {'0': [250.0]}"]
    # a driver update, where a result keeps the rig's facts (``rig`` is the rig's name)
    old |= {"rig": "garage", "rig_facts": {"driver_version": "550.127.05", "cuda_version": "12.4"}}
    new = json.loads(json.dumps(old))
    new["rig_facts"] = {"driver_version": "580.159.04", "cuda_version": "13.0"}
    assert provenance_changes(old, new) == ["driver: 550.127.05 -> 580.159.04", "CUDA: 12.4 -> 13.0"]


def test_flag_changes_are_named_by_flag():
    from llamarig.bench.compare import flag_changes
    old = ["/opt/b/llama-server", "--model", "/m.gguf", "--threads", "2", "--mlock", "-ot", "a=CPU", "--temp", "-1"]
    new = ["/opt/c/llama-server", "--model", "/m.gguf", "--threads", "1", "-ot", "a=CPU", "--temp", "-1",
           "--api-key-file", "/run/k", "--jinja"]
    assert flag_changes(old, new) == "added --api-key-file /run/k, added --jinja, removed --mlock, --threads 2 -> 1"
    moved = [w for w in old if w != "--mlock"] + ["--mlock"]
    assert flag_changes(old, moved) == "the same flags in another order"


def test_the_table_has_the_seeds_columns():
    text = table.render("rig1 chat", summarize(raw_result()), ["a note"])
    lines = text.splitlines()
    assert lines[0] == "rig1 chat"
    assert lines[1].split("  ")[:2] == ["Context", "Prefill (t/s)"] and "Decode (tokens/kWh)" in lines[1]
    assert lines[2].startswith("0 ") and " - " in lines[2]
    assert lines[3].startswith("1K       1,000.00 +- 100.00  50.00 +- 5.00")
    assert "200.0 +- 0.0" in lines[3] and "900,000 +- 90,000" in lines[3]
    assert lines[-1] == "  a note"
    assert table.markdown(summarize(raw_result())).startswith("| Context | Prefill (t/s) |")


def test_charts_are_pngs_and_the_energy_chart_needs_power(tmp_path):
    rows = summarize(raw_result())
    written = charts.write(rows, "t", tmp_path / "s.png", tmp_path / "e.png")
    assert written == [tmp_path / "s.png", tmp_path / "e.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    unpowered = raw_result()
    unpowered["power"] = None
    assert charts.write(summarize(unpowered), "t", tmp_path / "s2.png", tmp_path / "e2.png") == [tmp_path / "s2.png"]


def test_results_are_kept_beside_the_inventory_and_the_last_earlier_one_is_found(tmp_path):
    inventory = tmp_path / "inventory" / "home.py"
    root = store.results_root(str(inventory))
    assert root == tmp_path / "inventory" / "bench-results"
    directory = store.service_dir(root, "garage", "glm")
    assert store.previous(directory) is None
    for name in ("20261201T100000Z", "20261202T100000Z"):
        store.save(directory, name, {"summary": [{"depth": 1}], "name": name}, "table\n")
    (directory / "20261203T100000Z.json").write_text("{broken")
    path, data = store.previous(directory, before="20261203T000000Z")
    assert path.name == "20261202T100000Z.json" and data["name"] == "20261202T100000Z"
    assert store.previous(directory)[0].name == "20261202T100000Z.json"  # the broken one is passed over
    assert (directory / "20261201T100000Z.txt").read_text() == "table\n"
    assert not list(directory.glob("*.tmp"))


def test_depths_are_tokens_with_k_for_1024():
    assert depths_arg("0,4096,16k, 4096") == [0, 4096, 16384]
    import argparse
    for bad in ("", "4x", "-1", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            depths_arg(bad)


def test_the_running_flags_are_matched_against_the_release():
    release = ["--model", "/m.gguf", "--api-key-file", "%d/api-key", "-t", "2"]
    running = ["/opt/bin/llama-server", "--model", "/m.gguf", "--api-key-file", "/run/credentials/u/api-key",
               "-t", "2"]
    assert matches_release(running, release) is True
    assert matches_release(running[:-1] + ["1"], release) is False
    assert matches_release(None, release) is None


def test_limits_seen_show_the_limit_each_gpu_ran_under():
    samples = [[0.0, gpu(100, 300.0), gpu(50, 250.0)], [1.0, gpu(120, 300.0), gpu(60, 200.0)]]
    seen = limits_seen({"gpus": [0, 2], "samples": samples})
    assert seen[0] == {"gpu": 0, "power_limits_w": [300.0], "sm_clock_mhz": [1695.0, 1695.0],
                       "mem_clock_mhz": [9751.0, 9751.0], "temperature_c": [30.0, 30.0]}
    assert seen[1]["gpu"] == 2 and seen[1]["power_limits_w"] == [200.0, 250.0]  # it changed while it ran
    assert limits_seen(None) == []
