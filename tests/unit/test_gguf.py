"""llamarig.gguf: headers of real and synthetic GGUFs, local and over HTTP range requests."""

from __future__ import annotations

import os
import struct

import pytest

from llamarig.planner import ggml_types
from llamarig.planner.gguf import GgufError, read_model
from testbed import synth
from testbed.fakehub import FakeHub
from testbed.sources import ensure_gemma_gguf, ensure_gemma_split


def _data_start_and_size(path):
    from gguf import GGUFReader
    r = GGUFReader(path)
    return r.data_offset, os.path.getsize(path), r


def test_real_gemma_file_every_tensor_matches_the_gguf_package():
    path = str(ensure_gemma_gguf())
    m = read_model(path)
    start, size, r = _data_start_and_size(path)
    theirs = {t.name: (t.tensor_type.name, tuple(int(x) for x in t.shape), int(t.n_bytes)) for t in r.tensors}
    mine = {t.name: (t.type_name, t.shape, t.nbytes) for t in m.tensors}
    assert mine == theirs
    # the tensors account for the whole data section, up to alignment padding
    assert size - start - 32 * len(m.tensors) <= m.total_bytes <= size - start
    assert (m.arch, m.n_layer, m.n_embd, m.n_head_kv[0], m.head_dim_k, m.n_ctx_train) == ("gemma3", 18, 640, 1, 256, 32768)
    assert m.n_vocab == 262144 and m.n_swa == 512
    # gemma3: every 6th layer is full attention (llama.cpp's set_swa_pattern(6))
    assert [il for il, swa in enumerate(m.swa_layers) if not swa] == [5, 11, 17]


def test_any_part_of_a_split_set_reads_the_whole_model():
    single = read_model(str(ensure_gemma_gguf()))
    parts = [str(p) for p in ensure_gemma_split(3)]
    for part in parts:
        m = read_model(part)
        assert m.files == parts
        assert sorted((t.name, t.nbytes) for t in m.tensors) == sorted((t.name, t.nbytes) for t in single.tensors)
        assert {t.file for t in m.tensors} == {0, 1, 2}


@pytest.mark.parametrize("make, parts", [(synth.dense_llama, 1), (synth.qwen3moe, 2),
                                         (synth.glm47_iq1m, 3), (synth.glm52_like, 5)])
def test_synthetic_shapes(tmp_path, make, parts):
    s = make()
    names = synth.write_model(str(tmp_path / "m.gguf"), s, parts=parts)
    m = read_model(names[-1])
    expected = {n: ggml_types.by_name(t).nbytes(shape) for n, shape, t in synth.tensors(s)}
    assert {t.name: t.nbytes for t in m.tensors} == expected
    assert m.n_layer == s.block_count and m.n_nextn == s.n_nextn
    assert (m.n_expert, m.n_expert_used, m.n_layer_dense_lead) == (s.n_expert, s.n_expert_used, s.n_dense_lead)
    assert m.n_vocab == s.n_vocab and m.n_ctx_train == s.ctx_train
    if s.kv_lora_rank:
        assert m.is_mla and (m.kv_lora_rank, m.n_rot) == (s.kv_lora_rank, s.qk_rope)
    else:
        assert m.n_head_kv == [s.n_head_kv] * s.block_count and m.head_dim_k == s.head_dim


def test_seed_model_sizes(tmp_path):
    glm = read_model(synth.write_model(str(tmp_path / "glm47.gguf"), synth.glm47_iq1m())[0])
    assert 97e9 < glm.total_bytes < 104e9            # the seed's "about 101 GB"
    assert glm.n_layer == 93 and glm.n_nextn == 1 and glm.n_expert == 160 and glm.n_head_kv[0] == 8
    glm5 = read_model(synth.write_model(str(tmp_path / "glm52.gguf"), synth.glm52_like())[0])
    assert 215e9 < glm5.total_bytes < 230e9          # "about 223 GB"


def test_ik_types_count_their_row_metadata(tmp_path):
    ik = [t for t in ggml_types.ik_types().values() if t.row_meta_size]
    assert ik, "ik_llama.cpp's type table lists types with per-row metadata"
    s = synth.qwen3moe(n_layer=2, types={"default": "Q8_0", "exps": ik[0].name})
    path = synth.write_model(str(tmp_path / "ik.gguf"), s)[0]
    m = read_model(path)
    exps = [t for t in m.tensors if "_exps" in t.name]
    for t in exps:
        ne0, rows = t.shape[0], t.shape[1] * t.shape[2]
        assert t.type_name == ik[0].name
        assert t.nbytes == rows * (ik[0].row_meta_size + ne0 // ik[0].blck_size * ik[0].type_size)


def test_bad_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(GgufError, match="not a GGUF"):
        read_model(str(bad))
    path = synth.write_model(str(tmp_path / "t.gguf"), synth.dense_llama())[0]
    head = open(path, "rb").read(200)
    short = tmp_path / "short.gguf"
    short.write_bytes(head)
    with pytest.raises(GgufError, match="ends early"):
        read_model(str(short))
    with pytest.raises(GgufError, match="No such file"):
        read_model(str(tmp_path / "missing-00001-of-00002.gguf"))
    v9 = tmp_path / "v9.gguf"
    v9.write_bytes(b"GGUF" + struct.pack("<IQQ", 9, 0, 0))
    with pytest.raises(GgufError, match="version 9"):
        read_model(str(v9))


def test_hub_reads_headers_by_range_requests(tmp_path):
    """A 3-part set served by the fake Hub: only header bytes travel, with the token sent."""
    rev = tmp_path / "hub" / "acme" / "moe-GGUF" / "main" / "Q8_0"
    rev.mkdir(parents=True)
    s = synth.qwen3moe(n_layer=4)
    names = synth.write_model(str(rev / "moe.gguf"), s, parts=3)
    total = sum(os.path.getsize(n) for n in names)
    with FakeHub(tmp_path / "hub") as hub:
        url = hub.url
        m = read_model("hf:acme/moe-GGUF/Q8_0/" + os.path.basename(names[1]), revision="main",
                       endpoint=url, token="hf_canary_range")
        local = read_model(names[0])
        assert [(t.name, t.nbytes) for t in m.tensors] == [(t.name, t.nbytes) for t in local.tensors]
        gets = hub.requests_for(".gguf", "GET")
        assert gets and all(r.range for r in gets)
        spans = [tuple(map(int, r.range.removeprefix("bytes=").split("-"))) for r in gets]
        assert sum(b - a + 1 for a, b in spans) < 100 << 20 and len(gets) <= 12
        assert m.files[0].startswith("hf:acme/moe-GGUF/")
        assert all({k.lower(): v for k, v in r.headers.items()}.get("authorization") == "Bearer hf_canary_range"
                   for r in gets)
        assert total > 1e9  # the files are big; what travelled is bounded by the chunked header reads
        with pytest.raises(GgufError, match="not found"):
            read_model("hf:acme/moe-GGUF/Q8_0/none.gguf", endpoint=url)
