"""bench/tune_device/lib.sh, the GPU machine's session helpers, run here with stand-ins: gpu_clean kills
whatever holds the GPU's device files but the ballast; ik_serving_variant keeps the first of ik_llama.cpp's
option variants that serves."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "bench/tune_device/lib.sh"


def holder(path: Path) -> subprocess.Popen:
    """A process with ``path`` open (as a CUDA process has /dev/nvidia*)."""
    return subprocess.Popen(["bash", "-c", f'exec 3<"{path}"; exec sleep 300'])


def gone(p: subprocess.Popen, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return p.poll() is not None


def test_gpu_clean_kills_every_holder_of_the_gpu_files_but_the_ballast(tmp_path):
    (tmp_path / "fakegpu0").write_text("")
    (tmp_path / "other").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 118581\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    ballast, stray, innocent = holder(tmp_path / "fakegpu0"), holder(tmp_path / "fakegpu0"), holder(tmp_path / "other")
    try:
        time.sleep(0.3)
        script = (f'. "{LIB}"; say() {{ echo "$*"; }}; BALLAST_PID={ballast.pid}; BASE_USED=118581; '
                  f'GPU_FILES="{tmp_path}/fakegpu"; gpu_clean')
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                             env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}"))
        assert out.returncode == 0, out.stderr
        assert gone(stray)
        assert ballast.poll() is None and innocent.poll() is None
        assert f"gpu_clean: killing {stray.pid} (sleep 300" in out.stdout
        assert "gpu_clean: memory.used 118581 MiB (the ballast alone: 118581)" in out.stdout
    finally:
        for p in (ballast, stray, innocent):
            p.kill()
            p.wait()


def run_variants(tmp_path, serving: str, variants: str) -> tuple[str, list[str]]:
    calls = tmp_path / "calls"
    script = f'''
. "{LIB}"
say() {{ echo "say: $*"; }}
gpu_clean() {{ echo clean >> "{calls}"; }}
fid() {{  # the fidelity runner's stand-in: serves when the serving option is among its arguments
  local name=$3; echo "fid $*" >> "{calls}"
  local outcome=exited; case " $* " in *" --server-arg={serving} "*) outcome=serves ;; esac
  local out=${{FID_OUT:-$WORK/fidelity}}
  mkdir -p "$out"; echo "{{\\"outcome\\": \\"$outcome\\"}}" > "$out/ik_llama.cpp-$name-c32k-ub512-np1-f16.json"
}}
WORK="{tmp_path}/work" IK=/ik/llama-server IK_VARIANTS=$'{variants}'
ik_serving_variant
echo "found=[$IK_FOUND] args=[$IK_ARGS]"
'''
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout, calls.read_text().splitlines()


def test_the_first_variant_that_serves_is_kept_and_none_after_it_is_tried(tmp_path):
    out, calls = run_variants(tmp_path, "-no-fmoe", r"\n-no-ooae\n-no-fmoe\n-no-ooae -no-fmoe -no-gr")
    assert "found=[1] args=[-no-fmoe]" in out
    fids = [c for c in calls if c.startswith("fid")]
    assert len(fids) == 3 and calls.count("clean") == 3            # the GPU cleaned before each try
    assert "--server-arg" not in fids[0]                           # its defaults first
    assert fids[1].endswith("--server-arg=-no-ooae") and fids[2].endswith("--server-arg=-no-fmoe")
    assert all("smoke" in f and "--ctx 32768 --ubatch 512 --parallel 1 --prompt 1000" in f for f in fids)
    assert "say: ik smoke 1 [its defaults]: exited" in out and "say: ik smoke 3 [-no-fmoe]: serves" in out
    assert (tmp_path / "work/smoke").is_dir() and not (tmp_path / "work/fidelity").exists()  # apart from the cases


def test_no_variant_that_serves_leaves_ik_out(tmp_path):
    out, calls = run_variants(tmp_path, "-nothing", r"\n-no-ooae -no-fmoe")
    assert "found=[] args=[]" in out
    fids = [c for c in calls if c.startswith("fid")]
    assert len(fids) == 2 and fids[1].endswith("--server-arg=-no-ooae --server-arg=-no-fmoe")
