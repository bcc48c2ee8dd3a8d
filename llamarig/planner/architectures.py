"""Which model architectures each pinned fork loads, and which of them the planner sizes.

The lists are read from the forks' own sources (``src/llama-arch.cpp``: ``LLM_ARCH_NAMES`` and
the ``llm_arch_is_recurrent`` / ``llm_arch_is_hybrid`` / ``llm_arch_is_diffusion`` switches) at
the trees llamarig pins, into ``architectures.json``::

    python -m llamarig.planner.architectures --write LLAMA_CPP_TREE IK_LLAMA_CPP_TREE

A model whose architecture its fork does not load is refused before anything is planned (the
server would fail with "unknown model architecture"). One the fork loads is planned only when
the planner's memory model covers its kind: ``attention`` (a KV cache per attention layer,
sliding-window and MLA layers included); ``recurrent`` and ``hybrid`` models keep a per-slot
state that is sized only for the families ``RECURRENT_SIZED`` names for that fork; anything else
is refused with the architecture and the fork named, never planned silently.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path

DATA = Path(__file__).with_name("architectures.json")

# Families whose recurrent state the memory model sizes, per fork (llamarig/planner/memory.py
# recurrent_layers, state_layer: read from each fork's loaders and cache code, checked against each fork's own
# sizing in tests/e2e/test_kv_oracle.py). ik_llama.cpp keeps its delta-net families' state in its KV cache.
RECURRENT_SIZED = {
    "llama.cpp": frozenset({"mamba", "mamba2", "jamba", "falcon-h1", "granitehybrid", "nemotron_h",
                            "nemotron_h_moe", "qwen3next", "qwen35", "qwen35moe", "lfm2", "lfm2moe", "plamo2"}),
    "ik_llama.cpp": frozenset({"qwen3next", "qwen35", "qwen35moe"}),
}
# Attention models whose cache layout the memory model does not have (llama.cpp's loaders, src/models/*.cpp):
# refused by name, never sized as plain attention.
ATTENTION_UNSIZED = {
    "gemma4": "sliding-window layers with their own head widths and layers that reuse another layer's cache",
    "gemma4-assistant": "layers that reuse the main model's cache",
    "dots3note": "sliding-window MLA layers with their own latent ranks",
    "deepseek4": "its compressed-attention caches",
    "dflash": "a draft model's cache",
}
# Loaded by the forks but not something llama-server serves for chat (encoders, diffusion, vision towers).
NOT_SERVED = frozenset({"clip", "bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2",
                        "jina-bert-v3", "modern-bert", "t5encoder", "wavtokenizer-dec", "eurobert"})


class ArchitectureError(Exception):
    """A model the fork cannot load, or whose memory the planner does not size: said in words."""


@functools.lru_cache(maxsize=1)
def _table() -> dict:
    return json.loads(DATA.read_text())


def kind(fork: str, arch: str) -> str | None:
    """``attention``, ``recurrent``, ``hybrid`` or ``diffusion``; None when ``fork`` does not load ``arch``."""
    entry = _table().get(fork)
    if entry is None:
        return None
    return entry["architectures"].get(arch)


def swa_pattern(arch: str) -> tuple[int, bool]:
    """(period, dense_first) of the sliding-window pattern llama.cpp's loader sets for ``arch``; (0, False)
    when it sets none."""
    found = _table()["llama.cpp"].get("swa_patterns", {}).get(arch)
    return (int(found[0]), bool(found[1])) if found else (0, False)


def check(fork: str, arch: str) -> None:
    """Raise ArchitectureError unless the planner can size ``arch`` as ``fork`` loads it."""
    table = _table()
    if fork not in table:
        raise ArchitectureError(f"no architecture list for the fork {fork!r}")
    found = table[fork]["architectures"].get(arch)
    where = f"{fork} ({table[fork]['source']})"
    if found is None:
        near = sorted(a for a in table[fork]["architectures"] if a.split("-")[0] == arch.split("-")[0])
        hint = f"; it loads {', '.join(near)}" if near else ""
        raise ArchitectureError(f"the model's architecture {arch!r} is not one {where} loads{hint}")
    if arch in NOT_SERVED or found == "diffusion":
        raise ArchitectureError(f"the model's architecture {arch!r} ({found}) is not a model llama-server serves "
                                f"for completions")
    if arch in ATTENTION_UNSIZED:
        raise ArchitectureError(f"the model's architecture {arch!r} keeps {ATTENTION_UNSIZED[arch]} in {where}: "
                                f"llamarig's planner does not size that yet; declare the placement by hand "
                                f"(placement: manual, with n_gpu_layers and tensor_overrides)")
    if found in ("recurrent", "hybrid") and arch not in RECURRENT_SIZED.get(fork, ()):
        raise ArchitectureError(f"the model's architecture {arch!r} is {found} in {where}: llamarig's planner does "
                                f"not size its recurrent state yet; declare the placement by hand "
                                f"(placement: manual, with n_gpu_layers and tensor_overrides)")


# --- reading the sources ------------------------------------------------------------------------

_NAME = re.compile(r'\{\s*(LLM_ARCH_\w+)\s*,\s*"([^"]+)"\s*\}')


def _switch(text: str, function: str) -> set[str]:
    match = re.search(r"bool\s+" + function + r"\s*\([^)]*\)\s*\{(.*?)\n\}", text, re.S)
    if not match:
        return set()
    body = match.group(1).split("return true")[0]
    return set(re.findall(r"case\s+(LLM_ARCH_\w+)\s*:", body))


_FACTORY = re.compile(r"((?:case\s+LLM_ARCH_\w+\s*:\s*)+)return\s+new\s+(llama_model_\w+)\s*\(")
_SWA_CALL = re.compile(r"load_swa_pattern\(\s*ml\s*,\s*(\d+)\s*(?:,\s*(?:/\*[^*]*\*/\s*)?(true|false))?\s*\)")


def read_swa_patterns(tree: Path, names: dict[str, str]) -> dict[str, list]:
    """{architecture: [period, dense_first]} of the models whose loader sets a sliding-window pattern
    (``load_swa_pattern(ml, N[, dense_first])`` in ``src/models/*.cpp``), by the factory's class of each
    architecture (``src/llama-model.cpp``). llama.cpp's own rule: a layer slides unless
    ``il % N == N - 1`` (``il % N == 0`` with dense_first); a pattern stored in the file wins."""
    factory = (tree / "src" / "llama-model.cpp").read_text()
    classes: dict[str, list[str]] = {}
    for cases, cls in _FACTORY.findall(factory):
        classes.setdefault(cls, []).extend(re.findall(r"LLM_ARCH_\w+", cases))
    patterns = {}
    for path in sorted((tree / "src" / "models").glob("*.cpp")):
        text = path.read_text()
        for cls in re.findall(r"void\s+(llama_model_\w+)::load_arch_hparams", text):
            body = text[text.index(f"{cls}::load_arch_hparams"):]
            body = body[:body.find("\n}\n") + 1] if "\n}\n" in body else body
            match = _SWA_CALL.search(body)
            if match:
                for enum in classes.get(cls, []):
                    if enum in names:
                        patterns[names[enum]] = [int(match.group(1)), match.group(2) == "true"]
    return dict(sorted(patterns.items()))


def _names(tree: Path) -> dict[str, str]:
    text = (tree / "src" / "llama-arch.cpp").read_text()
    table = text[text.index("LLM_ARCH_NAMES"):]
    return dict(_NAME.findall(table[:table.index("};")]))


def read_tree(tree: Path) -> dict[str, str]:
    """{architecture name: kind} of one fork's source tree."""
    text = (tree / "src" / "llama-arch.cpp").read_text()
    names = _names(tree)
    recurrent, hybrid = _switch(text, "llm_arch_is_recurrent"), _switch(text, "llm_arch_is_hybrid")
    diffusion = _switch(text, "llm_arch_is_diffusion")
    out = {}
    for enum, name in names.items():
        if enum in ("LLM_ARCH_UNKNOWN",) or name == "(unknown)":
            continue
        out[name] = ("recurrent" if enum in recurrent else "hybrid" if enum in hybrid
                     else "diffusion" if enum in diffusion else "attention")
    return dict(sorted(out.items()))


def main(argv: list[str]) -> int:
    if len(argv) != 5 or argv[0] != "--write":
        print("usage: python -m llamarig.planner.architectures --write LLAMA_CPP_TREE LABEL IK_TREE LABEL",
              file=sys.stderr)
        return 2
    data = {"llama.cpp": {"source": argv[2], "architectures": read_tree(Path(argv[1]))},
            "ik_llama.cpp": {"source": argv[4], "architectures": read_tree(Path(argv[3]))}}
    for fork, tree in (("llama.cpp", Path(argv[1])), ("ik_llama.cpp", Path(argv[3]))):
        if (tree / "src" / "models").is_dir():
            data[fork]["swa_patterns"] = read_swa_patterns(tree, _names(tree))
    DATA.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"{DATA}: " + ", ".join(f"{fork} {len(v['architectures'])}" for fork, v in data.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
