# The GPU bench machine as a llamarig rig, for bench/tune_device/run_tune.py (never deployed: it has
# no systemd and no SSH; the tune engine runs there with its local runner). One H200 held by a
# ballast allocation to a 24 GiB budget, declared as a 24 GiB card; the Qwen3-30B-A3B-shaped Q8_0
# GGUF of bench/serve_bench/write_model.py; one service planned by llamarig (placement: auto) at
# 16K context, on llama.cpp, with ik_llama.cpp as the other build the tune may try (tune_forks).
h200 = [
    ("h200", {
        "gpus": [{"model": "NVIDIA H200", "memory_gib": 24}],
        "ram_gib": 100,
        "gpu_margin_mib": 1024,
        "build_fork": "llama.cpp",
        "build_git_url": "https://github.com/ggml-org/llama.cpp",
        "build_ref": "llama-cpp-python-0.3.36",
        # the ik_llama.cpp pack.sh carried (IK_COMMIT; a label here: the device's lookups resolve nothing)
        "tune_forks": [{"build_fork": "ik_llama.cpp", "build_git_url": "https://github.com/ikawrakow/ik_llama.cpp",
                        "build_ref": "8337e4cd3861406fc04e0854b1409cd1b027fbc9"}],
        "build_cuda_architectures": [90],
        "models": {"qwen3moe": {"repo": "bench/qwen3-30b-a3b-shaped", "revision": "0" * 40,
                                "file": "model.gguf"}},
        "services": [{
            "name": "bench",
            "model": "qwen3moe",
            "port": 8091,
            "ctx_size": 16384,
            "parallel": 1,
            "placement": "auto",
            "flash_attn": "on",
        }],
    }),
]
