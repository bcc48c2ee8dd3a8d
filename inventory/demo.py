# The embedded demo rig: a Debian container on this machine (started by
# `bash scripts/demo.sh`, which runs `python -m testbed up`), with a stand-in
# nvidia-smi reporting two RTX 3090s, a local Hub serving a split gemma-3 270M,
# and a local git server with llama.cpp. Its addresses come from the testbed's
# state file; everything else is ordinary llamarig host data.
import json
import os
from pathlib import Path

_workdir = Path(os.environ.get("LLAMARIG_DEMO_DIR", "/var/lib/llamarig-demo"))
_state_file = _workdir / "testbed.json"
if not _state_file.exists():
    raise SystemExit(f"{_state_file} is missing: start the demo rig with `bash scripts/demo.sh`")
_bed = json.loads(_state_file.read_text())

# This machine's CPU may report AMX, whose llama.cpp kernels crash in some VMs: build without them.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def _rig_data(rig: dict, port: int) -> dict:
    return {
        "ssh_hostname": "127.0.0.1",
        "ssh_port": rig["ssh_port"],
        "ssh_user": "root",
        "ssh_key": _bed["ssh_key"],
        "ssh_known_hosts_file": "/dev/null",
        "ssh_strict_host_key_checking": "no",
        "gpus": [{"model": "NVIDIA GeForce RTX 3090", "memory_gib": 24}] * 2,
        "power_limit_w": 300,
        "build_git_url": _bed["llama_cpp"]["repo"],
        "build_ref": _bed["llama_cpp"]["tag"],
        "build_targets": ["llama-server", "llama-gguf-split"],
        "build_cmake_options": [f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}"],
        "hub_endpoint": _bed["hub_url"],
        "models": {
            "gemma": {"repo": _bed["model_repo"], "include": ["Q4_K_M/*.gguf"]},
        },
        "services": [{
            "name": "chat",
            "model": "gemma",
            "port": port,
            "ctx_size": 4096,
            "gpus": [0, 1],
            "tensor_split": [1, 1],
            "parallel": 1,
            "sampling": {"temp": 0.7, "top_p": 0.95},
        }],
    }


# Every rig the testbed started (the demo starts one, "demo", serving on 8080; bench/no_change starts two),
# each serving on its own port: the rigs share this machine's network.
demo = [(rig["name"], _rig_data(rig, 8080 + i)) for i, rig in enumerate(_bed["rigs"])]
