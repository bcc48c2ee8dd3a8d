"""Checks of the benchmark's pieces that need no GPU (run here, before the device run).

    PYTHONPATH=. .venv/bin/python bench/seed_limits/selftest.py      (or: pytest bench/seed_limits/selftest.py)

The GPU-format log below is FABRICATED (made-up sizes in llama.cpp's line formats): it checks the
parser, it is not a measurement. testdata/cpu-L4-ctx4096.log is a real llama-server log (a CPU-only
build of the same llama.cpp, the 4-layer model, ctx 4096): it checks the parser against the
formats that build really prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path[:0] = [HERE, REPO]

import collect  # noqa: E402
import write_model  # noqa: E402

MiB = 1 << 20

FABRICATED_GPU_LOG = """\
0.00.010.000 I cmn  common_init_: fitting params to device memory ...
0.00.300.000 I common_memory_breakdown_print: | memory breakdown [MiB] | total    free    self   model   context   compute    unaccounted |
0.00.300.001 I common_memory_breakdown_print: |   - CUDA0 (H200)       | 143771 = 24000 + (9999 = 8888 +  1000 +  111) + 109772 |
0.00.300.002 I common_memory_breakdown_print: |   - Host               |                  777 =   700 +     0 +   77                |
0.00.300.100 I common_params_fit_impl: projected to use 9999 MiB of device memory vs. 24000 MiB of free device memory
0.00.400.000 I llama_model_loader: loaded meta data with 40 key-value pairs and 417 tensors from m.gguf (version GGUF V3 (latest))
0.01.000.000 I load_tensors: offloaded 26/26 layers to GPU
0.01.000.001 I load_tensors:        CUDA0 model buffer size = 10000.00 MiB
0.01.000.002 I load_tensors:        CUDA0 model buffer size =   500.50 MiB
0.01.000.003 I load_tensors:   CPU_Mapped model buffer size =  3000.00 MiB
0.01.100.000 I llama_context:  CUDA_Host  output buffer size =     2.31 MiB
0.01.200.000 I llama_kv_cache:      CUDA0 KV buffer size =   816.00 MiB
0.01.300.000 I sched_reserve:      CUDA0 compute buffer size =  1000.00 MiB
0.01.300.001 I sched_reserve:  CUDA_Host compute buffer size =    50.00 MiB
0.01.400.000 I sched_reserve:      CUDA0 compute buffer size =  1200.00 MiB
0.01.400.001 I sched_reserve:  CUDA_Host compute buffer size =    60.00 MiB
0.09.000.000 I common_memory_breakdown_print: | memory breakdown [MiB] | total    free    self   model   context   compute    unaccounted |
0.09.000.001 I common_memory_breakdown_print: |   - CUDA0 (H200)       | 143771 =  9000 + (12516 = 10500 +  816 + 1200) + 122255 |
0.09.000.002 I common_memory_breakdown_print: |   - Host               |                  3062 =  3000 +     0 +   62                 |
"""


def test_parse_fabricated_gpu_log():
    p = collect.parse_log(FABRICATED_GPU_LOG)
    cuda, host = p["buffers"]["CUDA0"], p["buffers"]["host"]
    assert cuda["model"] == round(10500.50 * MiB), cuda          # two CUDA0 model buffers add up
    assert cuda["kv"] == 816 * MiB
    assert cuda["compute"] == 1200 * MiB                          # the last reserve counts
    assert cuda["total"] == cuda["model"] + cuda["kv"] + cuda["compute"]
    assert host["model"] == 3000 * MiB and host["compute"] == 60 * MiB and host["output"] == round(2.31 * MiB)
    bd = p["breakdown"]["CUDA0"]                                  # the exit table, not the --fit one
    assert (bd["self"], bd["model"], bd["context"], bd["compute"]) == (12516 * MiB, 10500 * MiB, 816 * MiB, 1200 * MiB)
    assert bd["total"] == 143771 * MiB and bd["free"] == 9000 * MiB and bd["description"] == "H200"
    assert p["breakdown"]["host"]["self"] == 3062 * MiB
    assert p["fit_projection"] == {"projected_used": 9999 * MiB, "free": 24000 * MiB}
    assert p["oom"] is None


def test_oom_lines():
    cases = {
        "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 18000.00 MiB on device 0: cudaMalloc failed: out of memory\n"
        "alloc_tensor_range: failed to allocate CUDA0 buffer of size 18874368000\n": ("CUDA0", 18000 * MiB),
        "graph_reserve: failed to allocate compute buffers\n"
        "ggml_gallocr_reserve_n: failed to allocate CUDA0 buffer of size 2147483648\n": ("CUDA0", 2147483648),
        "CUDA error: out of memory\n  current device: 0, in function ggml_cuda_pool_alloc\n": ("CUDA0", None),
        "llama_model_load: error loading model: unable to allocate CUDA_Host buffer\n": ("host", None),
        "terminate called after throwing an instance of 'std::bad_alloc'\n": ("host", None),
    }
    for text, (dev, size) in cases.items():
        oom = collect.find_oom("0.01.000.000 I something before\n" + text)
        assert oom and oom["device"] == dev, (text, oom)
        if size is not None:
            assert oom["alloc_bytes"] == size, (text, oom)
    assert collect.find_oom("load_tensors: CUDA0 model buffer size = 1.00 MiB\n") is None


def test_rows_and_outcomes():
    pred = {"fits": True, "reason": "", "args": ["--ctx-size", "16384", "--fit", "off"],
            "devices": [{"name": "CUDA0", "budget": 23 * 1024 * MiB, "weights": 10 * 1024 * MiB, "kv": 816 * MiB,
                         "compute": 1200 * MiB, "total": 12 * 1024 * MiB}],
            "host": {"weights": 3000 * MiB, "total": 3100 * MiB}}
    meta = {"runner_outcome": "serves", "rc": 0, "stopped": "sigterm", "start_s": 12.5, "request_s": 3.0,
            "before": {"used": 119000}, "peak_used_mib": 132000, "peak_pid_mib": 12900,
            "at_ready": {"pid_mib": 12800}, "after_request": {"pid_mib": 12900, "proc": {"VmRSS": 4000 * MiB}},
            "peak_hwm_bytes": 4000 * MiB, "response": {"content": "tok1"}}
    rows = collect.rows_for_case("planned-ctx16384", "planned", 16384, meta, FABRICATED_GPU_LOG, pred)
    assert [r["device"] for r in rows] == ["CUDA0", "host"]
    for r in rows:
        assert {"case", "placement", "device", "predicted", "measured", "outcome"} <= set(r)
        assert r["outcome"] == "serves" and r["placement"] == "planned" and r["case"] == "planned-ctx16384"
    assert rows[0]["predicted"] == 12 * 1024 * MiB and rows[0]["measured"] == 12900 * MiB
    assert rows[0]["llama_cpp"]["breakdown"]["self"] == 12516 * MiB
    assert rows[1]["predicted"] == 3100 * MiB and rows[1]["measured"] == 4000 * MiB
    # nvidia-smi did not list the pid (other PID namespace): the device's memory.used delta
    m2 = dict(meta, peak_pid_mib=None)
    assert collect.rows_for_case("x", "seed", 1, m2, None, pred)[0]["measured"] == 13000 * MiB
    # an OOM at load: outcome and device from the log; nothing measured when nothing was seen
    oom_log = "llama_model_loader: loaded meta data with 1 key-value pairs\n" \
              "ggml_backend_cuda_buffer_type_alloc_buffer: allocating 500.00 MiB on device 0: cudaMalloc failed: out of memory\n"
    m3 = {"runner_outcome": "exited", "rc": 1, "stopped": "already-exited", "before": {"used": 119000},
          "peak_used_mib": 119000, "peak_pid_mib": None}
    r3 = collect.rows_for_case("x", "planned", 1, m3, oom_log, pred)
    assert [r["outcome"] for r in r3] == ["oom", "oom"] and r3[0]["oom_device"] == "CUDA0"
    assert r3[0]["measured"] is None and r3[0]["oom_alloc_bytes"] == 500 * MiB
    # killed by a SIGKILL nobody in the runner sent: the OOM killer, on the host
    m4 = dict(m3, rc=-9)
    assert collect.rows_for_case("x", "seed", 1, m4, "no oom line\n", pred)[0]["oom_device"] == "host"
    assert collect.rows_for_case("x", "seed", 1, dict(m3, rc=-9, stopped="sigkill"), "", pred)[0]["outcome"] == "error"
    assert collect.rows_for_case("x", "seed", 1, {"runner_outcome": "skipped"}, None, pred)[0]["outcome"] == "skipped"
    assert collect.rows_for_case("x", "seed", 1, None, None, None)[0]["outcome"] == "not-run"
    assert collect.rows_for_case("x", "seed", 1, dict(m3, runner_outcome="timeout"), "", pred)[0]["outcome"] == "timeout"


def test_real_cpu_log():
    with open(os.path.join(HERE, "testdata", "cpu-L4-ctx4096.log")) as f:
        p = collect.parse_log(f.read())
    h = p["buffers"]["host"]
    assert h["model"] == round(4139.14 * MiB) and h["kv"] == 34 * MiB and h["compute"] == round(106.09 * MiB)
    assert p["breakdown"]["host"]["self"] == 4279 * MiB          # the exit table (the --fit one says 3188)
    assert "CUDA0" not in p["buffers"] and p["oom"] is None


def test_model_shape_and_sizes():
    from llamarig.planner import ggml_types
    full = write_model.shape(92)
    rows = write_model.rows_for(full)
    names = [n for n, _, _ in rows]
    assert not any(n.endswith(".ffn_norm.weight") for n in names)
    assert sum(n.endswith(".post_attention_norm.weight") for n in names) == 93
    total = sum(ggml_types.by_name(t).nbytes(s) for _, s, t in rows)
    assert 99e9 < total < 103e9, total                           # GLM-4.7 UD-IQ1_M is about 101 GB
    small = write_model.rows_for(write_model.shape(24))
    per_layer = {n.split(".", 2)[2]: (s, t) for n, s, t in small if n.startswith("blk.10.")}
    per_layer_full = {n.split(".", 2)[2]: (s, t) for n, s, t in rows if n.startswith("blk.10.")}
    assert per_layer == per_layer_full                           # every layer as in the full model
    assert per_layer["ffn_gate_exps.weight"] == ((5120, 1536, 160), "IQ1_M")
    assert per_layer["ffn_down_exps.weight"] == ((1536, 5120, 160), "IQ2_XS")
    tok = write_model.tokenizer_meta(151552)
    assert len(tok["tokenizer.ggml.tokens"]) == 151552 == len(tok["tokenizer.ggml.token_type"])


def test_written_file_reads_back():
    """A 2-layer file: the gguf package parses it, llamarig's reader sees the same tensors and sizes."""
    import gguf
    from llamarig.planner.gguf import read_model
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.gguf")
        r = subprocess.run([sys.executable, os.path.join(HERE, "write_model.py"), path, "--layers", "2"],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=REPO))
        assert r.returncode == 0, r.stderr
        assert os.stat(path).st_blocks * 512 < 64 * MiB              # sparse: headers only on disk
        reader = gguf.GGUFReader(path)
        assert len(reader.tensors) == len(write_model.rows_for(write_model.shape(2)))
        arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
        assert arch == "glm4moe"
        m = read_model(path)
        assert m.n_layer == 3 and m.n_nextn == 1
        by_name = {t.name: t.nbytes for t in m.tensors}
        for t in reader.tensors:
            assert by_name[t.name] == int(t.n_bytes), t.name


def test_predict_cli_runs():
    """predict.py on a 2-layer file: the CLI plan and the seed table, as JSON files."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.gguf")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(REPO, "bench", ".carry", "pydeps"), REPO]))
        subprocess.run([sys.executable, os.path.join(HERE, "write_model.py"), path, "--layers", "2"], check=True,
                       capture_output=True, env=env)
        r = subprocess.run([sys.executable, os.path.join(HERE, "predict.py"), path, os.path.join(d, "pred"),
                            "--ctx", "16384"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        for kind in ("seed", "planned"):
            with open(os.path.join(d, "pred", f"{kind}-16384.json")) as f:
                doc = json.load(f)
            assert doc["devices"][0]["name"] == "CUDA0" and doc["host"]["total"] > 0 and doc["args"]


if __name__ == "__main__":
    failed = 0
    for name, fn in list(globals().items()):
        if name.startswith("test_") and callable(fn):
            try:
                fn()
                print(f"ok   {name}")
            except Exception as exc:  # noqa: BLE001
                failed += 1
                print(f"FAIL {name}: {type(exc).__name__}: {exc}")
    sys.exit(1 if failed else 0)
