"""The planner against the buffers the forks themselves logged on a real GPU (bench/results: the fidelity
runs' servers and the tune's candidates on one H200, Qwen3-30B-A3B-shaped Q8_0). Each server's argv is read
back into flags (bench/fidelity/replay.py) and planned again on the same shape written here header-only:
its weights and KV bytes on the card must be the ones the fork logged, and its compute buffer within
[-32, +64] MiB of the fork's own line (the CUDA runtime beside the buffers is the fidelity bench's, not
this test's)."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path

import pytest

from bench.fidelity.replay import replay
from llamarig.planner.gguf import read_model
from testbed import synth

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench/results"


def logged(log: str) -> dict:
    """CUDA0's buffers as the fork printed them (the last load in the log), in MiB."""
    def last(pattern):
        found = re.findall(pattern, log)
        return float(found[-1]) if found else None
    return {"weights": last(r"CUDA0 (?:model )?buffer size =\s*([0-9.]+) MiB"),
            "kv": last(r"CUDA0 KV buffer size =\s*([0-9.]+) MiB"),
            "compute": last(r"CUDA0 compute buffer size =\s*([0-9.]+) MiB")}


def servers() -> list[tuple[str, dict, str]]:
    """(name, {fork, argv}, log) of every recorded qwen3moe server whose log has its buffer lines."""
    out = []
    for path in sorted(glob.glob(str(RESULTS / "fidelity-h*/run*/*.json"))):
        doc = json.loads(Path(path).read_text())
        log = Path(path[:-5] + ".log")
        # the device session's smoke tries of ik (smokeN, bench/tune_device/lib.sh) load the same qwen3moe model
        qwen3moe = doc.get("model") == "qwen3moe" or re.fullmatch(r"smoke\d+", doc.get("model", ""))
        if qwen3moe and "argv" in doc and log.exists():
            out.append((f"{Path(path).parent.name}/{doc['case']}", doc, log.read_text(errors="replace")))
    for path in sorted(glob.glob(str(RESULTS / "tune-h*/*/tune.json"))):
        tune = json.loads(Path(path).read_text())
        for c in tune["candidates"]:
            cid = c["candidate"]["id"]
            for log in glob.glob(str(Path(path).parent / f"logs/*-{cid}.log")):
                text = Path(log).read_text(errors="replace")
                fork = "ik_llama.cpp" if "llm_load_tensors:" in text else "llama.cpp"
                if "--fit" not in c["argv"]:
                    out.append((f"{Path(path).parent.parent.name}/{Path(path).parent.name}/{cid}",
                                {"fork": fork, "argv": c["argv"]}, text))
    return [s for s in out if logged(s[2])["compute"] is not None]


SERVERS = servers()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return read_model(synth.write_model(str(tmp_path_factory.mktemp("q3") / "qwen3moe.gguf"), synth.qwen3moe())[0])


def test_both_forks_are_on_record():
    forks = {doc["fork"] for _, doc, _ in SERVERS}
    assert forks == {"llama.cpp", "ik_llama.cpp"} and len(SERVERS) >= 8


@pytest.mark.parametrize("name, doc, log", SERVERS, ids=[s[0] for s in SERVERS])
def test_the_plan_of_a_recorded_server_is_what_its_fork_allocated(model, name, doc, log):
    want = logged(log)
    got = replay(doc, model)
    assert abs(got["weights"] - want["weights"]) <= 1, (got, want)
    if want["kv"] is not None:
        assert abs(got["kv"] - want["kv"]) <= 1, (got, want)
    assert -32 <= got["compute"] - want["compute"] <= 64, (got, want)


MEASURED = [s for s in SERVERS if s[1].get("measured_mib") is not None]


@pytest.mark.parametrize("name, doc, log", MEASURED, ids=[s[0] for s in MEASURED])
def test_what_the_process_holds_beside_its_buffers_is_planned(model, name, doc, log):
    """The card's peak use for the process minus the buffers its fork logged (CUDA context, cuBLAS, the
    memory pool: ik_llama.cpp's grows with the ubatch) against the plan's runtime column: never short by
    more than 48 MiB, never over by more than 96."""
    want = logged(log)
    outside = doc["measured_mib"] - (want["weights"] + (want["kv"] or 0) + want["compute"])
    got = replay(doc, model)["runtime"]
    assert -48 <= got - outside <= 96, (got, outside)


def test_the_pool_cases_are_on_record():
    ubatches = {(doc["fork"], doc.get("ubatch")) for _, doc, _ in MEASURED}
    assert {("ik_llama.cpp", 512), ("ik_llama.cpp", 4096), ("llama.cpp", 512), ("llama.cpp", 4096)} <= ubatches
