"""bench/tune_device/session.sh, the GPU machine's whole session, rehearsed here on stand-ins (tests/rig_programs/
device_fakes: nvidia-smi, nvcc making the ballast, build_both.sh making both forks' llama-server the stand-in
server): the models, the ballast, ik_llama.cpp's option variants until one serves (its stand-in dies on its
first prompt unless it gets -no-ooae), its fidelity cases with that variant, the tune with ik's candidates
carrying it, and nothing left running. What a device session would otherwise find out at the price of its
30 minutes."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.rig_programs.helpers import ROOT

FAKES = ROOT / "tests/rig_programs/device_fakes"


def holders(path: Path) -> list[int]:
    """The processes that have ``path`` open."""
    out = []
    for fd_dir in glob.glob("/proc/[0-9]*/fd"):
        try:
            if any(os.readlink(os.path.join(fd_dir, fd)) == str(path) for fd in os.listdir(fd_dir)):
                out.append(int(fd_dir.split("/")[2]))
        except OSError:
            continue
    return out


def test_the_session_finds_iks_serving_variant_runs_its_cases_and_the_tune_and_leaves_nothing(tmp_path):
    work, gpu = tmp_path / "work", tmp_path / "gpu"
    (tmp_path / "gpu0").write_text("")
    # python3 is this test's (the session's scripts import llamarig's dependencies; on the GPU machine they
    # come from the carry's pydeps); an empty carry, since this checkout's .carry may hold real binaries
    path = f"{FAKES}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, WORK=str(work), GPU_FILES=str(gpu), CARRY=str(tmp_path / "carry"),
               BUILD_BOTH=str(FAKES / "build_both.sh"), FAKE_IK_NEEDS="-no-ooae", MAIN_CASES="",
               IK_VARIANTS="\n-no-ooae\n-no-fmoe", SESSION_S="420", TUNE_MINUTES="2", TUNE_MIN_MINUTES="2",
               TUNE_ARGS="--depth 256 --tokens 8 --repetitions 2 --rounds 2 --finalists 1 --axes ubatch,fork_options "
                         "--ubatches 1024 --drop grouped_expert_routing,merge_qkv,^ubatch_size --load-timeout 30")
    done = subprocess.run(["bash", str(ROOT / "bench/tune_device/session.sh")], env=env, capture_output=True,
                          text=True, timeout=600)
    log = (work / "session.log").read_text() if (work / "session.log").exists() else done.stdout
    assert done.returncode == 0 and (work / "session.done").exists(), log + done.stderr
    # no llama.cpp cases: ik, the longer build, is awaited first at full priority, mainline at nice 19
    assert (work / "build/nice").read_text().split() == ["IK_NICE=0", "MAIN_NICE=19"]
    assert log.index("ik_llama.cpp build:") < log.index("] llama.cpp build:") < log.index("tune:"), log
    assert "ik smoke 1 [its defaults]: exited" in log and "ik smoke 2 [-no-ooae]: serves" in log, log
    assert "ik smoke 3" not in log                                  # the first that serves is kept
    assert (work / "ik_args.txt").read_text().strip() == "-no-ooae"
    smokes = sorted(Path(p).name for p in glob.glob(str(work / "smoke/*.json")))
    assert smokes == ["ik_llama.cpp-smoke1-c32k-ub512-np1-f16.json", "ik_llama.cpp-smoke2-c32k-ub512-np1-f16.json"]
    cases = [json.loads(Path(p).read_text()) for p in sorted(glob.glob(str(work / "fidelity/ik_llama.cpp-*.json")))]
    assert len(cases) == 8 and all(c["outcome"] == "serves" and "-no-ooae" in c["argv"] for c in cases), \
        [(c["case"], c["outcome"]) for c in cases]
    tune = json.loads((work / "tune/tune.json").read_text())
    labels = {c["candidate"]["id"]: c["candidate"]["label"] for c in tune["candidates"]}
    ik = [cid for cid in labels if cid.startswith("b1")]
    assert ik and all(labels[cid].endswith("[-no-ooae]") for cid in ik)
    assert {"c0", "fit", *ik} <= set(tune["measurements"]), (tune["failures"], tune["not_run"])
    assert all(c["host_keys"].get("services", [{}])[0].get("extra_args") == ["-no-ooae"]
               for c in tune["candidates"] if c["candidate"]["id"] in ik)
    assert "gpu_clean: memory.used 118581 MiB (the ballast alone: 118581)" in log
    assert holders(tmp_path / "gpu0") == []                          # the ballast and every server gone
    left = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True).stdout.split()
    assert left == [], subprocess.run(["ps", "-o", "pid,args", "-p", ",".join(left)], capture_output=True,
                                      text=True).stdout


def carry_binary(carry: Path, fork: str, content: bytes, *, parts: int = 2, sha_of: bytes | None = None) -> None:
    """A fork's llama-server as run_device.sh brings it home: xz-compressed, split, with its sha256."""
    packed = subprocess.run(["xz", "-c"], input=content, capture_output=True, check=True).stdout
    size = -(-len(packed) // parts)
    for i in range(parts):
        (carry / f"{fork}.xz.part{i}").write_bytes(packed[i * size:(i + 1) * size])
    digest = subprocess.run(["sha256sum"], input=sha_of or packed, capture_output=True, check=True).stdout
    (carry / f"{fork}.sha256").write_text(digest.decode().split()[0] + f"  {fork}.xz\n")


def test_a_carried_llama_server_is_unpacked_instead_of_built_and_a_damaged_one_is_built(tmp_path):
    work, carry = tmp_path / "work", tmp_path / "carry"
    carry.mkdir()
    main = b"#!/bin/sh\necho carried llama.cpp\n" + os.urandom(4096)
    carry_binary(carry, "llama.cpp", main)
    carry_binary(carry, "ik_llama.cpp", b"#!/bin/sh\necho carried ik\n", sha_of=b"something else")
    # an nvcc that fails: no ballast, so the session ends right after the builds
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/nvcc").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "bin/nvcc").chmod(0o755)
    path = f"{tmp_path / 'bin'}:{FAKES}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, WORK=str(work), GPU_FILES=str(tmp_path / "gpu"), CARRY=str(carry),
               BUILD_BOTH=str(FAKES / "build_both.sh"), MAIN_CASES="")
    done = subprocess.run(["bash", str(ROOT / "bench/tune_device/session.sh")], env=env, capture_output=True,
                          text=True, timeout=120)
    log = (work / "session.log").read_text() if (work / "session.log").exists() else done.stdout
    assert "llama.cpp's llama-server unpacked from the carry" in log, log
    assert "ik_llama.cpp's carried llama-server does not match its sha256: built instead" in log, log
    assert (work / "build/skips").read_text().split() == ["SKIP_MAIN=1", "SKIP_IK=0"]
    assert (work / "build/nice").read_text().split() == ["IK_NICE=19", "MAIN_NICE=0"]   # llama.cpp awaited first
    assert (work / "build/llama.cpp/bin/llama-server").read_bytes() == main
    assert os.access(work / "build/llama.cpp/bin/llama-server", os.X_OK)
    assert b"fake_llama_server" in (work / "build/ik_llama.cpp/bin/llama-server").read_bytes()
    assert (work / "llama.cpp.sent").exists() and not (work / "ik_llama.cpp.sent").exists()
    assert "the ballast did not get READY" in log and (work / "session.done").exists()
