"""Write a fidelity model's GGUF from its spec (shapes.py's JSON): real header, every tensor, data a sparse hole.

    python bench/fidelity/write_model.py specs/NAME.json OUT.gguf

All-zero blocks are valid in every type used (F32, Q8_0, Q4_K, MXFP4): the model loads and computes; its
memory does not depend on the values.
"""

from __future__ import annotations

import json
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, REPO)

from testbed import synth  # noqa: E402


def main(argv: list[str]) -> int:
    with open(argv[0]) as f:
        spec = json.load(f)
    rows = [(name, tuple(shape), type_name) for name, shape, type_name in spec["tensors"]]
    meta = spec["meta"] | synth.tokenizer_meta(spec["tokenizer"]["n_vocab"], pre=spec["tokenizer"]["pre"])
    size = synth.write_gguf(argv[1], meta, rows)
    print(f"write_model: {argv[1]}: {len(rows)} tensors, {os.path.getsize(argv[1]) / 2**30:.2f} GiB "
          f"(write_gguf said {size})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
