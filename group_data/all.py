# llamarig defaults: every key llamarig reads, with its default. A rig (host
# data) or a group (group_data/GROUP.py) states only what differs. The README's
# data reference documents each key; tests/unit/test_schema.py checks that this
# file and llamarig/schema.py name the same keys.

# --- GPUs: the rig's NVIDIA cards in nvidia-smi index order ([] = CPU only) ---
gpus = []
ram_gib = None  # system RAM for weights kept off the GPUs (the planner's host budget)
gpu_margin_mib = 1024  # per GPU, left free by the planner beyond everything it counts

# --- build: which llama.cpp, at which ref, how ---
build_fork = "llama.cpp"  # or "ik_llama.cpp"
build_git_url = "https://github.com/ggml-org/llama.cpp"
build_ref = "master"  # pin a tag or commit for a reproducible rig
build_cuda_architectures = "auto"  # or e.g. [86] for RTX 3090s
build_cmake_options = []  # extra -DNAME=VALUE options
build_targets = ["llama-server", "llama-bench", "llama-gguf-split"]
build_jobs = None  # None: the rig's CPU count
build_root = "/opt/llamarig"
build_ccache_dir = "/var/cache/ccache"  # None: build without ccache
build_packages = ["build-essential", "cmake", "git", "ccache"]
# other builds `llamarig tune` may build (each in its own prefix) and try, e.g.
# [{"build_fork": "ik_llama.cpp", "build_git_url": "https://github.com/ikawrakow/ik_llama.cpp", "build_ref": "main"}]
tune_forks = []

# --- hub: where models come from ---
hub_endpoint = "https://huggingface.co"
hub_token_env = "HF_TOKEN"  # read on the controller, if set
hub_token_file = None  # or a file on the controller holding the token
hub_client = "huggingface_hub>=1.0,<3"

# --- models and services ---
models = {}
models_dir = "/var/lib/llamarig/models"
services = []
service_user = "llama"
# llama.cpp rpc-servers lending this rig's GPUs (or CPU) to services of other rigs (`rpc_workers`), e.g.
# [{"name": "garage", "host": "192.168.10.2", "gpus": [0, 1]}]; rpc-server has no authentication: bind a private address
rpc_servers = []

# --- power ---
power_limit_w = None  # watts for every GPU; None leaves limits alone
power_limits_w = {}  # per-GPU watts by index, e.g. {3: 200}
power_persistence_mode = True

# --- verify: what every deploy checks after the services are up ---
verify_timeout_s = 600
verify_prompt = "Reply with one short friendly sentence."
verify_max_tokens = 24
