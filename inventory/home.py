# A two-rig home inventory: edit the addresses, then describe each rig in its
# host data (or in group_data/GROUP.py for data several rigs share).
# Check it offline with `llamarig check inventory/home.py`, preview units with
# `llamarig render inventory/home.py`, deploy with
# `pyinfra inventory/home.py deploy.py` (add `--dry --diff` to see changes first).

rigs = [
    ("garage", {
        "ssh_hostname": "192.168.1.50",
        "ssh_user": "root",
        "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 6,
        "build_ref": "b7100",
        "build_cuda_architectures": [86],
        "power_limit_w": 350,
        "models": {
            "glm47": {
                "repo": "unsloth/GLM-4.7-GGUF",
                "include": ["UD-IQ1_M/*"],
                "file": "UD-IQ1_M/GLM-4.7-UD-IQ1_M-00001-of-00003.gguf",
            },
        },
        "services": [{
            "name": "glm",
            "model": "glm47",
            "host": "0.0.0.0",
            "port": 8000,
            "tensor_split": [1, 1, 1, 1, 1, 1],
            "ctx_size": 131072,
            "cache_type_k": "q8_0",
            "cache_type_v": "q8_0",
            "sampling": {"temp": 0.6, "top_p": 0.95},
        }],
    }),
    ("office", {
        "ssh_hostname": "192.168.1.51",
        "ssh_user": "root",
        "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}],
        "build_ref": "b7100",
        "build_cuda_architectures": [86],
        "models": {
            "glm47-q2": {
                "repo": "unsloth/GLM-4.7-GGUF",
                "include": ["UD-Q2_K_XL/*"],
                "file": "UD-Q2_K_XL/GLM-4.7-UD-Q2_K_XL-00001-of-00003.gguf",
            },
        },
        "services": [{
            "name": "glm",
            "model": "glm47-q2",
            "port": 8000,
            "n_gpu_layers": 99,
            "ctx_size": 16384,
            "flash_attn": "on",
            "jinja": True,
            "tensor_overrides": [["\\.ffn_.*_exps.", "CPU"]],
            "sampling": {"temp": 0.4, "top_p": 0.95},
        }],
    }),
]
