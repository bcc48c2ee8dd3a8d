"""Lay out fake Hub repos (for FakeHub) from the cached GGUF files."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .common import log
from .sources import ensure_gemma_split

GEMMA_REPO = "testbed/gemma-3-270m-GGUF"
README = """---
license: gemma
library_name: gguf
base_model: google/gemma-3-270m
tags: [gguf, testbed]
---
# gemma-3-270m GGUF (llamarig testbed)

Q4_K_M split in {n} parts with `llama-gguf-split`-compatible metadata.
Revision: {revision}. {note}
"""


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        if os.path.samefile(src, dst):
            return
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError as e:  # other filesystem: fall back to a copy
        log(f"hard link {src} -> {dst} failed ({e}); copying")
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.rename(dst)


def populate_hub(root_dir: str | Path, *, revision: str = "main", n_parts: int = 3,
                 note: str = "", repo_id: str = GEMMA_REPO) -> Path:
    """root_dir/<repo_id>/<revision>/Q4_K_M/gemma-3-270m-Q4_K_M-0000K-of-0000N.gguf
    (hard links into the cache) + README.md. Different `note`s give revisions with
    different commit shas but the same GGUF files. Returns the revision dir."""
    rev_dir = Path(root_dir) / repo_id / revision
    for p in ensure_gemma_split(n_parts):
        _link(p, rev_dir / "Q4_K_M" / p.name)
    readme = rev_dir / "README.md"
    text = README.format(n=n_parts, revision=revision, note=note)
    if not readme.exists() or readme.read_text() != text:
        readme.write_text(text)
    return rev_dir
