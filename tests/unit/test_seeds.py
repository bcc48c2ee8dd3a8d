"""inventory/seeds.py reproduces the seeds' command lines flag for flag (`llamarig render`).

Each expected command is copied from ../shared/seeds/ (paths aside). Flags are
compared by their long spelling in the rig's fork (`-ts` is `--tensor-split`),
values exactly, `--override-tensor` in order. Differences that remain are listed
in ALLOWED with the reason.
"""

import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from llamarig.forks.options import canonical
from llamarig.release.unit import systemd_split

ROOT = Path(__file__).resolve().parents[2]

SEEDS = {
    # 000: LLM Garage, six 3090s.
    ("glm47-six", "glm", "llama.cpp"): """
        $HOME/llama.cpp/build/bin/llama-server -m "$MODEL_PATH" --host 0.0.0.0 --port 8000 -ts 1,1,1,1,1,1
        --ctx-size 131072 --cache-type-k Q8_0 --cache-type-v Q8_0 --temp 0.6 --top-p 0.95""",
    # 002: GLM-5.2 on four 3090s.
    ("glm52-four", "glm", "llama.cpp"): r"""
        "$SERVER" --model "$MODEL" --host 0.0.0.0 --port 8001 --ctx-size 131072 --n-predict -1 --n-gpu-layers 999
        --split-mode layer --tensor-split 1,1,1,1
        -ot "blk\.(3|4|5|6|7)\.ffn_(gate|up|down)_exps\.=CUDA0"
        -ot "blk\.(8|9|10|11|12)\.ffn_(gate|up|down)_exps\.=CUDA1"
        -ot "blk\.(13|14|15|16|17)\.ffn_(gate|up|down)_exps\.=CUDA2"
        -ot "blk\.(18|19|20|21|22)\.ffn_(gate|up|down)_exps\.=CUDA3"
        -ot "ffn_(gate|up|down)_exps\.=CPU"
        --threads 12 --batch-size 2048 --ubatch-size 512 --flash-attn on --cache-type-k q8_0 --cache-type-v q8_0
        --no-mmap --jinja --reasoning off""",
    # 003: one GPU, experts on the CPU (llama-cli there; a server here).
    ("glm47-one", "glm", "llama.cpp"): r"""
        ./llama.cpp/llama-cli --model GLM-4.7-UD-Q2_K_XL-00001-of-00003.gguf --n-gpu-layers 99 --jinja --ctx-size 16384
        --flash-attn on --temp 0.4 --top-p 0.95 -ot "\.ffn_.*_exps.=CPU" --port 8080""",
    # 001: ubergarm's card, hybrid CPU + 1 GPU.
    ("glm47-ik-one", "glm", "ik_llama.cpp"): """
        ./build/bin/llama-server --model "$model" --alias ubergarm/GLM-4.7 --ctx-size 65536 -ger --merge-qkv -ngl 99
        --n-cpu-moe 72 -ub 4096 -b 4096 --threads 24 --parallel 1 --host 127.0.0.1 --port 8080 --no-mmap --jinja""",
    # 001: hybrid CPU + 2 GPUs with -sm graph.
    ("glm47-ik-two", "glm", "ik_llama.cpp"): """
        ./build/bin/llama-server --model "$model" --alias ubergarm/GLM-4.7 --ctx-size 65536 -ger -sm graph -smgs
        -mea 256 -ngl 99 --n-cpu-moe 72 -ts 41,48 -ub 4096 -b 4096 --threads 24 --parallel 1
        --host 127.0.0.1 --port 8080 --no-mmap --jinja""",
}

# Where a seed's spelling cannot be kept, and why.
ALLOWED = {
    # llama.cpp's parser compares cache types exactly and knows only lower case: Q8_0 is rendered q8_0.
    "--cache-type-k": {"Q8_0": "q8_0"},
    "--cache-type-v": {"Q8_0": "q8_0"},
}


def pairs(argv: list[str], fork: str) -> list[tuple[str, str | None]]:
    out = []
    i = 0
    while i < len(argv):
        flag = canonical(fork, argv[i])
        value = None
        if i + 1 < len(argv) and (not argv[i + 1].startswith("-") or argv[i + 1].lstrip("-").isdigit()):
            value = argv[i + 1]
            i += 1
        value = ALLOWED.get(flag, {}).get(value, value)
        out.append((flag, "<path>" if flag == "--model" else value))
        i += 1
    return out


@pytest.fixture(scope="module")
def rendered():
    out = subprocess.run([sys.executable, "-m", "llamarig", "render", "inventory/seeds.py"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    units, current = {}, None
    for line in out.splitlines():
        if line.startswith("# --- "):
            host, path = line[6:].split(": ")[:2]
            current = (host, Path(path).stem.removeprefix("llamarig-"))
            units[current] = []
        elif current:
            units[current].append(line)
    return units


@pytest.mark.parametrize("key", list(SEEDS), ids=[k[0] for k in SEEDS])
def test_seed_command_is_reproduced_flag_for_flag(rendered, key):
    host, service, fork = key
    lines = rendered[(host, service)]
    exec_start = next(line for line in lines if line.startswith("ExecStart="))[len("ExecStart="):]
    argv = systemd_split(exec_start)
    assert argv[0].startswith(f"/opt/llamarig/builds/{fork}-") and argv[0].endswith("/bin/llama-server")
    ours = pairs(argv[1:], fork)
    seed_argv = shlex.split(" ".join(SEEDS[key].split()))
    theirs = pairs(seed_argv[1:], fork)
    assert Counter(ours) == Counter(theirs)
    ot = lambda ps: [v for f, v in ps if f == "--override-tensor"]  # noqa: E731
    assert ot(ours) == ot(theirs)


def test_glm52_rig_pins_its_cards_in_pci_order(rendered):
    lines = rendered[("glm52-four", "glm")]
    assert "Environment=CUDA_DEVICE_ORDER=PCI_BUS_ID" in lines
    assert "Environment=CUDA_VISIBLE_DEVICES=0,1,2,3" in lines


def test_sidecar_variant_gives_the_x1_card_to_its_own_service(rendered):
    glm, qwen = rendered[("glm52-sidecar", "glm")], rendered[("glm52-sidecar", "qwen")]
    assert "Environment=CUDA_VISIBLE_DEVICES=0,1,2" in glm
    assert "Environment=CUDA_VISIBLE_DEVICES=3" in qwen
    argv = systemd_split(next(x for x in glm if x.startswith("ExecStart="))[10:])
    ots = [argv[i + 1] for i, a in enumerate(argv) if a == "--override-tensor"]
    assert [o.rsplit("=", 1)[1] for o in ots] == ["CUDA0", "CUDA1", "CUDA2", "CPU"]  # catch-all last


def test_systemd_split_inverts_quoting():
    from llamarig.release.unit import systemd_quote

    words = ["/bin/x", "blk\\.(3|4)\\.ffn=CUDA0", "a b", 'say "hi"', "100%", "$HOME", "--temp"]
    assert systemd_split(" ".join(systemd_quote(w) for w in words)) == words
