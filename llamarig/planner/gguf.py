"""Read a GGUF model's tensors and architecture from its headers only.

Works on a local file or on a Hub file through HTTP range requests (never the
whole file): ``read_model("/models/x-00001-of-00003.gguf")`` or
``read_model("hf:OWNER/REPO/PATH", revision="main")``. Any file of a split set
names the set; every part's header is read.

The result, :class:`ModelInfo`, lists each tensor's name, type, shape and bytes
(from the type table, cross-checked against the data offsets in the file) and
the architecture facts the planner needs (layers, experts, heads, KV heads,
head dimensions, MLA ranks, trained context, sliding-window layers, next-token
prediction layers).
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

from llamarig.planner import ggml_types
from llamarig.layout import split_siblings


class GgufError(Exception):
    pass


# ---------------------------------------------------------------- byte sources

class FileSource:
    def __init__(self, path: str):
        self.name = path
        try:
            self._f = open(path, "rb")
            self.size = os.fstat(self._f.fileno()).st_size
        except OSError as e:
            raise GgufError(f"{path}: {e.strerror}") from None

    def read(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def close(self):
        self._f.close()


class HubSource:
    """One Hub file read by HTTP range requests (``Range: bytes=a-b``)."""

    def __init__(self, repo: str, path: str, revision: str | None, endpoint: str | None, token: str | None):
        from huggingface_hub import hf_hub_url
        from huggingface_hub.utils import build_hf_headers, get_session

        self.name = f"hf:{repo}/{path}"
        endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
        self.url = hf_hub_url(repo, path, revision=revision, endpoint=endpoint)
        self._headers = build_hf_headers(token=token)
        self._session = get_session()
        self.size = None
        self.requests = 0
        self.bytes_read = 0

    def read(self, offset: int, n: int) -> bytes:
        if self.size is not None:
            n = min(n, self.size - offset)
            if n <= 0:
                return b""
        headers = {**self._headers, "Range": f"bytes={offset}-{offset + n - 1}", "Accept-Encoding": "identity"}
        self.requests += 1
        try:
            r = self._session.get(self.url, headers=headers, follow_redirects=True)
        except Exception as e:  # network errors of any transport
            raise GgufError(f"{self.name}: {e}") from None
        if r.status_code == 416:
            return b""
        if r.status_code in (401, 403):
            raise GgufError(f"{self.name}: HTTP {r.status_code}; a gated or private repository needs a token (HF_TOKEN)")
        if r.status_code == 404:
            raise GgufError(f"{self.name}: not found at this revision (HTTP 404)")
        if r.status_code != 206:
            raise GgufError(f"{self.name}: HTTP {r.status_code} to a range request (expected 206 Partial Content)")
        m = re.match(r"bytes \d+-\d+/(\d+)", r.headers.get("Content-Range", ""))
        if m:
            self.size = int(m.group(1))
        data = r.content
        self.bytes_read += len(data)
        return data[:n]

    def close(self):
        pass


class _Cursor:
    """Sequential reads over a source, fetched in growing chunks."""

    def __init__(self, src, chunk: int = 1 << 20):
        self.src, self.pos, self._buf, self._start, self._chunk = src, 0, b"", 0, chunk

    def take(self, n: int) -> bytes:
        end = self._start + len(self._buf)
        while self.pos + n > end:
            want = max(self._chunk, self.pos + n - end)
            data = self.src.read(end, want)
            if not data:
                raise GgufError(f"{self.src.name}: the header ends early at byte {end} (truncated or not a GGUF)")
            keep = self.pos - self._start
            self._buf = self._buf[keep:] + data
            self._start += keep
            end = self._start + len(self._buf)
            self._chunk = min(self._chunk * 2, 16 << 20)
        i = self.pos - self._start
        self.pos += n
        return self._buf[i:i + n]

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("Q")).decode("utf-8", errors="replace")


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
KEEP_ARRAY = 65536  # numeric arrays up to this length are kept (per-layer hparams); longer ones are counted


@dataclass
class ArrayInfo:
    """A long array in the metadata (tokens, merges): only its length is kept."""
    length: int


def _value(cur: _Cursor, vtype: int):
    if vtype in _SCALARS:
        return cur.unpack(_SCALARS[vtype])
    if vtype == 8:
        return cur.string()
    if vtype == 9:
        etype, n = cur.unpack("I"), cur.unpack("Q")
        if etype in _SCALARS and n <= KEEP_ARRAY:
            fmt = _SCALARS[etype]
            return list(struct.unpack(f"<{n}{fmt}", cur.take(n * struct.calcsize(fmt))))
        if etype in _SCALARS:
            cur.take(n * struct.calcsize("<" + _SCALARS[etype]))
        else:
            for _ in range(n):
                _value(cur, etype)
        return ArrayInfo(n)
    raise GgufError(f"{cur.src.name}: unknown metadata value type {vtype} at byte {cur.pos}")


# ---------------------------------------------------------------- the model

@dataclass(frozen=True)
class Tensor:
    name: str
    type_name: str
    type_id: int
    shape: tuple[int, ...]
    nbytes: int
    file: int  # index into ModelInfo.files

    @property
    def layer(self) -> int | None:
        m = re.match(r"blk\.(\d+)\.", self.name)
        return int(m.group(1)) if m else None


@dataclass
class ModelInfo:
    files: list[str]
    metadata: dict
    tensors: list[Tensor]
    arch: str = ""
    n_layer: int = 0                 # block_count, next-token layers included
    n_layer_dense_lead: int = 0
    n_nextn: int = 0                 # next-token-prediction (MTP) layers at the end
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_embd: int = 0
    n_head: list[int] = field(default_factory=list)     # per layer
    n_head_kv: list[int] = field(default_factory=list)  # per layer (0: no KV)
    head_dim_k: int = 0
    head_dim_v: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    n_rot: int = 0
    head_dim_k_mla: int = 0
    head_dim_v_mla: int = 0
    n_ctx_train: int = 0
    n_vocab: int = 0
    n_swa: int = 0
    swa_layers: list[bool] = field(default_factory=list)
    file_type: str = ""

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    def key(self, name: str, default=None):
        return self.metadata.get(f"{self.arch}.{name}", default)


def _read_header(src) -> tuple[dict, list[tuple[str, tuple[int, ...], int, int]], int]:
    cur = _Cursor(src)
    if cur.take(4) != b"GGUF":
        raise GgufError(f"{src.name}: not a GGUF file (bad magic)")
    version = cur.unpack("I")
    if version not in (2, 3):
        raise GgufError(f"{src.name}: GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = cur.unpack("Q"), cur.unpack("Q")
    meta = {}
    for _ in range(n_kv):
        key = cur.string()
        meta[key] = _value(cur, cur.unpack("I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("I")
        shape = tuple(cur.unpack("Q") for _ in range(n_dims))
        ttype, offset = cur.unpack("I"), cur.unpack("Q")
        infos.append((name, shape, ttype, offset))
    align = meta.get("general.alignment", 32)
    data_start = -(-cur.pos // align) * align
    return meta, infos, data_start


def _tensor_sizes(src_name: str, infos, data_start: int, file_size: int | None, align: int) -> list[tuple[str, int]]:
    """(type name, bytes) per tensor: from the type table, checked against the gap to the next tensor."""
    order = sorted(range(len(infos)), key=lambda i: infos[i][3])
    gap = {}
    for k, i in enumerate(order):
        nxt = infos[order[k + 1]][3] if k + 1 < len(order) else (file_size - data_start if file_size else None)
        gap[i] = None if nxt is None else nxt - infos[i][3]
    out = []
    for i, (name, shape, tid, _off) in enumerate(infos):
        candidates = [t for t in (ggml_types.mainline_types().get(tid), ggml_types.ik_types().get(tid)) if t]
        chosen = None
        for t in candidates:
            try:
                n = t.nbytes(shape)
            except ValueError:
                continue
            if gap[i] is None or n <= gap[i] < n + align:
                chosen = (t.name, n)
                break
        if chosen is None:
            if gap[i] is None:
                raise GgufError(f"{src_name}: tensor {name} has ggml type {tid}, which neither fork's table knows")
            # unknown type or a table that disagrees with the file: the file's own layout is the truth
            chosen = (candidates[0].name if candidates else f"type{tid}", gap[i])
        out.append(chosen)
    return out


def _open(ref: str, revision: str | None, endpoint: str | None, token: str | None):
    if ref.startswith("hf:"):
        parts = ref[3:].split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise GgufError(f"{ref}: expected hf:OWNER/REPO/PATH")
        repo, path = "/".join(parts[:2]), parts[2]
        return [HubSource(repo, p, revision, endpoint, token) for p in split_siblings(path)]
    return [FileSource(p) for p in split_siblings(ref)]


def read_model(ref: str, revision: str | None = None, endpoint: str | None = None,
               token: str | None = None) -> ModelInfo:
    """Read every part's header of a local GGUF or ``hf:OWNER/REPO/PATH``."""
    if ref.startswith("hf:") and token is None:
        token = os.environ.get("HF_TOKEN") or None
    sources = _open(ref, revision, endpoint, token)
    meta: dict = {}
    tensors: list[Tensor] = []
    try:
        for fi, src in enumerate(sources):
            m, infos, data_start = _read_header(src)
            if fi == 0:
                meta = m
                count = m.get("split.count", 1)
                if count != len(sources):
                    raise GgufError(f"{src.name}: split.count is {count} but the file name says {len(sources)} parts")
            if src.size is None:  # a Hub file: its size comes with the first ranged answer
                src.read(0, 1)
            sizes = _tensor_sizes(src.name, infos, data_start, src.size, m.get("general.alignment", 32))
            tensors += [Tensor(name, tn, tid, shape, n, fi) for (name, shape, tid, _), (tn, n) in zip(infos, sizes)]
    finally:
        for s in sources:
            s.close()
    info = ModelInfo(files=[s.name for s in sources], metadata=meta, tensors=tensors)
    _architecture(info)
    return info


def _per_layer(value, n: int) -> list[int]:
    if isinstance(value, list):
        return [int(v) for v in value] + [0] * (n - len(value))
    return [int(value or 0)] * n


def _architecture(info: ModelInfo) -> None:
    m = info.metadata
    a = info.arch = m.get("general.architecture", "")
    if not a:
        raise GgufError(f"{info.files[0]}: no general.architecture in the metadata")
    k = info.key
    n = info.n_layer = int(k("block_count", 0))
    info.n_layer_dense_lead = int(k("leading_dense_block_count", 0))
    info.n_nextn = int(k("nextn_predict_layers", 0))
    info.n_expert = int(k("expert_count", 0))
    info.n_expert_used = int(k("expert_used_count", 0))
    info.n_expert_shared = int(k("expert_shared_count", 0))
    info.n_embd = int(k("embedding_length", 0))
    info.n_head = _per_layer(k("attention.head_count", 0), n)
    info.n_head_kv = _per_layer(k("attention.head_count_kv", k("attention.head_count", 0)), n)
    head = info.n_embd // max(1, max(info.n_head or [1]) or 1)
    info.head_dim_k = int(k("attention.key_length", head))
    info.head_dim_v = int(k("attention.value_length", head))
    info.kv_lora_rank = int(k("attention.kv_lora_rank", 0))
    info.q_lora_rank = int(k("attention.q_lora_rank", 0))
    info.n_rot = int(k("rope.dimension_count", info.head_dim_k))
    info.head_dim_k_mla = int(k("attention.key_length_mla", 0))
    info.head_dim_v_mla = int(k("attention.value_length_mla", 0))
    info.n_ctx_train = int(k("context_length", 0))
    vocab = k("vocab_size")
    if vocab is None:
        toks = m.get("tokenizer.ggml.tokens")
        vocab = toks.length if isinstance(toks, ArrayInfo) else len(toks or [])
    info.n_vocab = int(vocab)
    if not info.n_vocab:
        out = next((t for t in info.tensors if t.name in ("output.weight", "token_embd.weight")), None)
        info.n_vocab = out.shape[1] if out and len(out.shape) > 1 else 0
    info.n_swa = int(k("attention.sliding_window", DEFAULT_WINDOW.get(a, 0)))
    info.swa_layers = _swa_layers(info)
    ft = m.get("general.file_type")
    info.file_type = str(ft) if ft is not None else ""


# llama.cpp's loaders default sliding windows that a file may not state: llama4's chunked attention
# (src/models/llama4.cpp: n_swa = 8192 unless the file says 0).
DEFAULT_WINDOW = {"llama4": 8192}
# hybrids whose attention layers all slide when the file gives a window (LFM2: not lfm2moe, whose loader
# reads no window)
SWA_ON_ATTENTION = frozenset({"lfm2"})


def _swa_layers(info: ModelInfo) -> list[bool]:
    """Which layers slide: the file's per-layer pattern, else its period, else the period llama.cpp's loader
    sets for the architecture (``architectures.swa_pattern``: a layer slides unless ``il % N == N - 1``, or
    unless ``il % N == 0`` for dense-first models)."""
    from llamarig.planner.architectures import swa_pattern

    n = info.n_layer
    if not info.n_swa:
        return [False] * n
    if info.arch in SWA_ON_ATTENTION:  # every attention layer slides (src/models/lfm2.cpp: is_swa = !is_recr)
        return [bool(h) for h in info.n_head_kv]
    stored = info.key("attention.sliding_window_pattern")
    if isinstance(stored, list):  # per layer: true = sliding
        return [bool(v) for v in stored] + [False] * (n - len(stored))
    period, dense_first = swa_pattern(info.arch)
    if isinstance(stored, int) and stored > 0:
        period = int(stored)
    if not period:
        return [False] * n
    if dense_first:
        return [il % period != 0 for il in range(n)]
    return [(il % period) < period - 1 for il in range(n)]


# ---------------------------------------------------------------- controller-side cache

def _to_json(info: ModelInfo) -> dict:
    meta = {k: ({"__array__": v.length} if isinstance(v, ArrayInfo) else v) for k, v in info.metadata.items()}
    return {"files": info.files, "metadata": meta,
            "tensors": [[t.name, t.type_name, t.type_id, list(t.shape), t.nbytes, t.file] for t in info.tensors]}


def _from_json(doc: dict) -> ModelInfo:
    meta = {k: (ArrayInfo(v["__array__"]) if isinstance(v, dict) and "__array__" in v else v)
            for k, v in doc["metadata"].items()}
    tensors = [Tensor(n, tn, tid, tuple(shape), nb, f) for n, tn, tid, shape, nb, f in doc["tensors"]]
    info = ModelInfo(files=doc["files"], metadata=meta, tensors=tensors)
    _architecture(info)
    return info


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llamarig", "gguf-headers")


def read_hub_model(repo: str, path: str, commit: str, endpoint: str | None, token: str | None) -> ModelInfo:
    """Headers of a Hub model at a resolved commit; cached on the controller (a commit never changes)."""
    import hashlib
    import json

    key = hashlib.sha256(json.dumps([endpoint, repo, path, commit]).encode()).hexdigest()[:32]
    file = os.path.join(cache_dir(), key + ".json")
    try:
        with open(file) as f:
            return _from_json(json.load(f))
    except (OSError, ValueError, KeyError):
        pass
    info = read_model(f"hf:{repo}/{path}", revision=commit, endpoint=endpoint, token=token)
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = f"{file}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(_to_json(info), f)
    os.replace(tmp, file)
    return info
