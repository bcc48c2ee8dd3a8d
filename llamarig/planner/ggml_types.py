"""GGML tensor types: block size, bytes per block and per-row metadata, for both forks.

A GGUF stores each tensor's type as a number. Mainline llama.cpp's numbers come
from the ``gguf`` package (kept in step with ggml.h); ik_llama.cpp adds its own
types from id 133 up (``ggml/include/ggml.h`` there), some of which carry a few
bytes of metadata per row (a scale) besides their blocks (``row_meta_size`` in
its ``ggml/src/ggml.c`` type traits). The table for ik's types is in
``llamarig/planner/ik_ggml_types.json``, read from ik_llama.cpp at commit 8337e4cd (ggml.h enum ggml_type and the type_traits initializer in ggml.c, compiled to get the sizes).

A row of ``n`` elements takes ``row_meta_size + n / blck_size * type_size``
bytes (ik's ``ggml_row_size``); a tensor takes that times the product of its
other dimensions. Row-interleaved types (``_R4``, ``_R8``...) pack several rows
together, which does not change the total.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class GgmlType:
    id: int
    name: str
    blck_size: int
    type_size: int
    row_meta_size: int = 0
    fork: str = "llama.cpp"   # where this id means this type

    def row_bytes(self, n: int) -> int:
        if n % self.blck_size:
            raise ValueError(f"{self.name}: a row of {n} is not a multiple of the block size {self.blck_size}")
        return self.row_meta_size + n // self.blck_size * self.type_size

    def nbytes(self, shape: tuple[int, ...]) -> int:
        rows = 1
        for d in shape[1:]:
            rows *= d
        return self.row_bytes(shape[0]) * rows


@lru_cache(maxsize=1)
def mainline_types() -> dict[int, GgmlType]:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return {t.value: GgmlType(t.value, t.name, *GGML_QUANT_SIZES[t])
            for t in GGMLQuantizationType if t in GGML_QUANT_SIZES}


@lru_cache(maxsize=1)
def ik_types() -> dict[int, GgmlType]:
    rows = json.loads(resources.files("llamarig.planner").joinpath("ik_ggml_types.json").read_text())
    return {r["id"]: GgmlType(r["id"], r["name"], r["blck_size"], r["type_size"], r.get("row_meta_size", 0),
                              "ik_llama.cpp")
            for r in rows if r.get("blck_size")}


def lookup(type_id: int) -> GgmlType | None:
    """The type a file's id means: mainline's where mainline has it, else ik_llama.cpp's."""
    return mainline_types().get(type_id) or ik_types().get(type_id)


def by_name(name: str) -> GgmlType:
    """Look a type up by its ggml name (any case): `q8_0`, `IQ2_KS`, `f16`."""
    want = name.upper()
    for table in (mainline_types(), ik_types()):
        for t in table.values():
            if t.name.upper() == want:
                return t
    raise KeyError(name)
