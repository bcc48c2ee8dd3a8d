# The four real-world setups of the seeds, as llamarig data (see the README's "Seeds").
# `llamarig render inventory/seeds.py` prints each rig's units; tests/unit/test_seeds.py
# checks that every rendered command line is the seed's, flag for flag.
# Addresses are placeholders: copy a rig into your own inventory and set its ssh_hostname.
# Group data: inventory/group_data/seeds_mainline.py and seeds_ik.py.

GPU_3090 = {"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}

# Seed 000 (LLM Garage): GLM-4.7 UD-IQ1_M on six 3090s at 350 W, 128K q8_0 cache.
seeds_mainline = [
    ("glm47-six", {
        "ssh_hostname": "glm47-six.lan",
        "gpus": [GPU_3090] * 6,
        "power_limit_w": 350,
        "models": {"glm47-iq1m": {"repo": "unsloth/GLM-4.7-GGUF", "include": ["UD-IQ1_M/*"],
                                  "file": "UD-IQ1_M/GLM-4.7-UD-IQ1_M-00001-of-00003.gguf"}},
        "services": [{
            "name": "glm", "model": "glm47-iq1m", "host": "0.0.0.0", "port": 8000,
            "tensor_split": [1, 1, 1, 1, 1, 1], "ctx_size": 131072,
            "cache_type_k": "Q8_0", "cache_type_v": "Q8_0",
            "sampling": {"temp": 0.6, "top_p": 0.95},
        }],
    }),
    # Seed 002 (r/LocalLLaMA): GLM-5.2 UD-IQ2_M on four 3090s at 200 W, experts placed per card, the rest on CPU.
    ("glm52-four", {
        "ssh_hostname": "glm52-four.lan",
        "gpus": [GPU_3090] * 4,
        "power_limit_w": 200,
        "models": {"glm52-iq2m": {"repo": "unsloth/GLM-5.2-GGUF", "include": ["UD-IQ2_M/*"],
                                  "file": "UD-IQ2_M/GLM-5.2-UD-IQ2_M-00001-of-00006.gguf"}},
        "services": [{
            "name": "glm", "model": "glm52-iq2m", "host": "0.0.0.0", "port": 8001,
            "gpus": [0, 1, 2, 3], "ctx_size": 131072, "n_predict": -1, "n_gpu_layers": 999,
            "split_mode": "layer", "tensor_split": [1, 1, 1, 1],
            "tensor_overrides": [
                ["blk\\.(3|4|5|6|7)\\.ffn_(gate|up|down)_exps\\.", "CUDA0"],
                ["blk\\.(8|9|10|11|12)\\.ffn_(gate|up|down)_exps\\.", "CUDA1"],
                ["blk\\.(13|14|15|16|17)\\.ffn_(gate|up|down)_exps\\.", "CUDA2"],
                ["blk\\.(18|19|20|21|22)\\.ffn_(gate|up|down)_exps\\.", "CUDA3"],
                ["ffn_(gate|up|down)_exps\\.", "CPU"],
            ],
            "threads": 12, "batch_size": 2048, "ubatch_size": 512, "flash_attn": "on",
            "cache_type_k": "q8_0", "cache_type_v": "q8_0", "mmap": False, "jinja": True, "reasoning": "off",
        }],
    }),
    # Seed 002's variant: GLM-5.2 IQ1_M on the three x16 cards, Qwen3.6-35B-A3B alone on the x1 card.
    ("glm52-sidecar", {
        "ssh_hostname": "glm52-sidecar.lan",
        "gpus": [GPU_3090] * 4,
        "power_limit_w": 200,
        "models": {
            "glm52-iq1m": {"repo": "unsloth/GLM-5.2-GGUF", "include": ["UD-IQ1_M/*"],
                           "file": "UD-IQ1_M/GLM-5.2-UD-IQ1_M-00001-of-00005.gguf"},
            "qwen36-a3b": {"repo": "unsloth/Qwen3.6-35B-A3B-GGUF", "include": ["*UD-Q4_K_XL*"],
                           "file": "Qwen3.6-35B-A3B-UD-Q4_K_XL.gguf"},
        },
        "services": [{
            "name": "glm", "model": "glm52-iq1m", "host": "0.0.0.0", "port": 8001,
            "gpus": [0, 1, 2], "ctx_size": 131072, "n_predict": -1, "n_gpu_layers": 999,
            "split_mode": "layer", "tensor_split": [1, 1, 1],
            "tensor_overrides": [
                ["blk\\.(3|4|5|6|7)\\.ffn_(gate|up|down)_exps\\.", "CUDA0"],
                ["blk\\.(8|9|10|11|12)\\.ffn_(gate|up|down)_exps\\.", "CUDA1"],
                ["blk\\.(13|14|15|16|17)\\.ffn_(gate|up|down)_exps\\.", "CUDA2"],
                ["ffn_(gate|up|down)_exps\\.", "CPU"],
            ],
            "threads": 12, "batch_size": 2048, "ubatch_size": 512, "flash_attn": "on",
            "cache_type_k": "q8_0", "cache_type_v": "q8_0", "mmap": False, "jinja": True, "reasoning": "off",
        }, {
            # The x1 link only slows loading: a model on one card never crosses it at inference.
            "name": "qwen", "model": "qwen36-a3b", "host": "0.0.0.0", "port": 8002,
            "gpus": [3], "n_gpu_layers": 999, "ctx_size": 65536, "flash_attn": "on", "jinja": True,
        }],
    }),
    # Seed 003: GLM-4.7 UD-Q2_K_XL on one 24 GB card, every expert on the CPU (run there as llama-cli).
    ("glm47-one", {
        "ssh_hostname": "glm47-one.lan",
        "gpus": [GPU_3090],
        "models": {"glm47-q2kxl": {"repo": "unsloth/GLM-4.7-GGUF", "include": ["UD-Q2_K_XL/*"],
                                   "file": "UD-Q2_K_XL/GLM-4.7-UD-Q2_K_XL-00001-of-00003.gguf"}},
        "services": [{
            "name": "glm", "model": "glm47-q2kxl", "port": 8080,
            "n_gpu_layers": 99, "jinja": True, "ctx_size": 16384, "flash_attn": "on",
            "sampling": {"temp": 0.4, "top_p": 0.95},
            "tensor_overrides": [["\\.ffn_.*_exps.", "CPU"]],
        }],
    }),
]

# Seed 001 (ubergarm's model card): GLM-4.7 on ik_llama.cpp, hybrid CPU + GPU, as servers.
seeds_ik = [
    ("glm47-ik-one", {
        "ssh_hostname": "glm47-ik-one.lan",
        "gpus": [GPU_3090],
        "services": [{
            "name": "glm", "model": "glm47-ik", "alias": "ubergarm/GLM-4.7", "ctx_size": 65536,
            "grouped_expert_routing": True, "merge_qkv": True, "n_gpu_layers": 99, "n_cpu_moe": 72,
            "ubatch_size": 4096, "batch_size": 4096, "threads": 24, "parallel": 1,
            "host": "127.0.0.1", "port": 8080, "mmap": False, "jinja": True,
        }],
    }),
    ("glm47-ik-two", {
        "ssh_hostname": "glm47-ik-two.lan",
        "gpus": [GPU_3090] * 2,
        "services": [{
            "name": "glm", "model": "glm47-ik", "alias": "ubergarm/GLM-4.7", "ctx_size": 65536,
            "grouped_expert_routing": True, "split_mode": "graph", "split_mode_graph_scheduling": True,
            "max_extra_alloc": 256, "n_gpu_layers": 99, "n_cpu_moe": 72, "tensor_split": [41, 48],
            "ubatch_size": 4096, "batch_size": 4096, "threads": 24, "parallel": 1,
            "host": "127.0.0.1", "port": 8080, "mmap": False, "jinja": True,
        }],
    }),
]
