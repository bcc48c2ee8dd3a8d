# One model over two rigs with llama.cpp's RPC backend: the garage rig (four RTX 3090s and 128 GB of RAM)
# serves GLM-4.7 and uses the office rig's two RTX 3090s through rpc-server, on a private network between
# the two (10.10.0.0/24 here: a second network card, a VLAN, or a WireGuard tunnel). rpc-server has no
# authentication: whoever reaches 10.10.0.2:50052 can use those GPUs. Both rigs build the same llama.cpp
# (the RPC protocol changes between versions), with -DGGML_RPC=ON, which llamarig adds.
#
#   llamarig check inventory/rpc.py
#   llamarig plan inventory/rpc.py --host garage --service glm    # the plan over all six GPUs and the RAM
#   pyinfra inventory/rpc.py deploy.py --dry --diff                 # office's rpc-server first, then garage
rigs = [
    ("garage", {
        "ssh_hostname": "192.168.1.50",
        "ssh_user": "root",
        "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 4,
        "ram_gib": 128,
        "build_ref": "b7100",
        "build_cuda_architectures": [86],
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
            "port": 8000,
            "placement": "auto",
            "ctx_size": 65536,
            "cache_type_k": "q8_0",
            "cache_type_v": "q8_0",
            "rpc_workers": ["office"],
        }],
    }),
    ("office", {
        "ssh_hostname": "192.168.1.51",
        "ssh_user": "root",
        "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 2,
        "ram_gib": 64,
        "build_ref": "b7100",
        "build_cuda_architectures": [86],
        "rpc_servers": [{"name": "office", "host": "10.10.0.2", "port": 50052, "cache": True, "cache_max_gib": 64}],
    }),
]
