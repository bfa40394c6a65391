"""The GGUF reader on files written by llama.cpp's own writer (``gguf``), hostile headers and real git."""

from __future__ import annotations

import itertools
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, new_repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_git.core.chunking import tensor_chunks
from coral_git.dtypes import GGML_TYPES
from coral_git.errors import FormatError
from coral_git.formats import gguf as reader
from coral_git.formats.layout import Layout
from coral_git.formats.registry import detect

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType


def reassemble(buf: bytes, layout: Layout) -> bytes:
    pieces = [*layout.gaps(), *((t.offset, t.end) for t in layout.tensors)]
    return b"".join(buf[s:e] for s, e in sorted(pieces))


def write(path: Path, tensors: dict[str, tuple[np.ndarray, object]], kv=None, alignment: int | None = None) -> bytes:
    """A GGUF file written by gguf-py; ``tensors``: name -> (array, raw ggml type or None)."""
    w = gguf.GGUFWriter(str(path), "llama")
    for key, (kind, value) in (kv or {}).items():
        getattr(w, f"add_{kind}")(key, value)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for name, (arr, raw) in tensors.items():
        w.add_tensor(name, arr, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def check_against_gguf_py(path: Path) -> Layout:
    buf = path.read_bytes()
    layout = reader.read(memoryview(buf))
    assert layout.format == "gguf" and layout.size == len(buf) and reassemble(buf, layout) == buf
    ref = gguf.GGUFReader(str(path))
    got = sorted((t.name, t.offset, t.nbytes, t.shape, t.dtype) for t in layout.tensors)
    want = sorted(
        (t.name, t.data_offset, t.n_bytes, tuple(reversed([int(d) for d in t.shape])), t.tensor_type.name) for t in ref.tensors
    )
    assert got == want
    return layout


def test_type_table_matches_gguf_py() -> None:
    assert {c: (t.name, t.block, t.bytes) for c, t in GGML_TYPES.items()} == {
        q.value: (q.name, *gguf.GGML_QUANT_SIZES[q]) for q in Q
    }


def test_every_ggml_type_and_every_kv_type(tmp_path: Path) -> None:
    kv = {
        "t.u8": ("uint8", 200), "t.i8": ("int8", -3), "t.u16": ("uint16", 60000), "t.i16": ("int16", -2),
        "t.u32": ("uint32", 7), "t.i32": ("int32", -9), "t.f32": ("float32", 1.5), "t.bool": ("bool", True),
        "t.str": ("string", "héllo"), "t.u64": ("uint64", 1 << 40), "t.i64": ("int64", -(1 << 40)),
        "t.f64": ("float64", 2.5), "t.arr": ("array", [1, 2, 3]), "t.strs": ("array", ["a", "", "ccc"]),
        "t.nested": ("array", [[1, 2], [3, 4, 5], [6]]), "t.deep": ("array", [[["x", "y"]], [["z"]]]),
    }  # fmt: skip
    tensors = {f"t.{q.name}": (np.arange(6 * gguf.GGML_QUANT_SIZES[q][1], dtype=np.uint8).reshape(3, -1), q) for q in Q}
    layout = check_against_gguf_py_file(tmp_path / "all.gguf", tensors, kv)
    assert {t.dtype for t in layout.tensors} == {t.name for t in GGML_TYPES.values()}


def check_against_gguf_py_file(path: Path, tensors, kv=None, alignment=None) -> Layout:
    write(path, tensors, kv, alignment)
    return check_against_gguf_py(path)


def test_quantized_model_alignment_and_version_2(tmp_path: Path) -> None:
    from gguf.quants import quantize

    x = np.random.default_rng(0).standard_normal((16, 256)).astype(np.float32)
    tensors = {
        "tok_embd.weight": (x, None),
        "blk.0.attn_q.weight": (quantize(x, Q.Q8_0), Q.Q8_0),
        "blk.0.attn_k.weight": (quantize(x, Q.Q4_0), Q.Q4_0),
        "output_norm.weight": (x[0].astype(np.float16), None),
    }
    for alignment in (None, 1, 8, 256):
        check_against_gguf_py_file(tmp_path / f"a{alignment}.gguf", tensors, alignment=alignment)
    buf = bytearray((tmp_path / "a256.gguf").read_bytes())
    buf[4:8] = struct.pack("<I", 2)
    assert detect(memoryview(bytes(buf))).layout.format == "gguf"
    buf[4:8] = struct.pack("<I", 1)
    assert detect(memoryview(bytes(buf))).layout.format == "opaque"
    buf[4:8] = struct.pack(">I", 3)  # big-endian
    assert detect(memoryview(bytes(buf))).layout.format == "opaque"


def test_quantized_chunks_fall_on_block_boundaries() -> None:
    for name, (block, nbytes) in {t.name: (t.block, t.bytes) for t in GGML_TYPES.values() if t.block > 1}.items():
        shape = (1000, 4 * block)
        total = 1000 * 4 * nbytes
        ranges = tensor_chunks(name, shape, total, 1 << 16)
        assert ranges[0][0] == 0 and ranges[-1][1] == total and len(ranges) > 1
        row = 4 * nbytes
        assert all(s % row == 0 and e % row == 0 for s, e in ranges), name
        assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    # a shape that does not hold whole blocks falls back to byte chunks (never fails)
    assert tensor_chunks("Q4_K", (3, 100), 5000, 1024)[-1] == (4096, 5000)


def header(n_tensors: int, n_kv: int, version: int = 3) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


def gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


@pytest.mark.parametrize(
    "body",
    [
        header(1 << 60, 0) + bytes(64),
        header(0, 1 << 60) + bytes(64),
        header(0, 1) + struct.pack("<Q", 1 << 62) + bytes(64),
        header(0, 1) + gstr(b"k") + struct.pack("<I", 99) + bytes(64),
        header(0, 1) + gstr(b"k") + struct.pack("<IIQ", 9, 4, 1 << 61) + bytes(64),
        header(0, 1) + gstr(b"k") + struct.pack("<IIQ", 9, 8, 1 << 40) + bytes(64),
        header(0, 1) + gstr(b"k") + b"".join(struct.pack("<IIQ", 9, 9, 1) for _ in range(100)) + bytes(64),
        header(0, 1) + gstr(b"general.alignment") + struct.pack("<II", 4, 24) + bytes(64),
        header(0, 1) + gstr(b"general.alignment") + struct.pack("<II", 4, 0) + bytes(64),
        header(0, 1) + gstr(b"general.alignment") + struct.pack("<IQ", 10, 32) + bytes(64),
        header(1, 0) + gstr(b"t") + struct.pack("<IQIQ", 1, 32, 77, 0) + bytes(64),
        header(1, 0) + gstr(b"t") + struct.pack("<IQIQ", 1, 33, 2, 0) + bytes(64),
        header(1, 0) + gstr(b"t") + struct.pack("<IQIQ", 1, 1 << 40, 0, 0) + bytes(64),
        header(1, 0) + gstr(b"t") + struct.pack("<IQIQ", 1, 4, 0, 3) + bytes(64),
        header(1, 0) + gstr(b"t") + struct.pack("<I", 99) + bytes(64),
        header(1, 0) + gstr(b"\xff") + struct.pack("<IQIQ", 1, 4, 0, 0) + bytes(64),
        header(2, 0) + (gstr(b"t") + struct.pack("<IQIQ", 1, 4, 0, 0)) * 2 + bytes(64),
        header(2, 0) + gstr(b"a") + struct.pack("<IQIQ", 1, 16, 0, 0) + gstr(b"b") + struct.pack("<IQIQ", 1, 4, 0, 32) + bytes(96),
    ],
)
def test_hostile_headers_are_opaque(body: bytes) -> None:
    with pytest.raises(FormatError):
        reader.read(memoryview(body))
    d = detect(memoryview(body))
    assert d.layout.format == "opaque" and reassemble(body, d.layout) == body and "gguf" in (d.note or "")


def test_handwritten_minimal_file() -> None:
    body = header(1, 1) + gstr(b"general.alignment") + struct.pack("<II", 4, 16) + gstr(b"w")
    body += struct.pack("<IQQIQ", 2, 32, 2, 2, 0)  # Q4_0, ne = (32, 2)
    body += bytes(-len(body) % 16) + bytes(range(36)) + b"trailer"
    layout = reader.read(memoryview(body))
    (t,) = layout.tensors
    assert (t.dtype, t.shape, t.nbytes, t.offset % 16) == ("Q4_0", (2, 32), 36, 0)
    assert body[t.offset : t.end] == bytes(range(36)) and reassemble(body, layout) == body


TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.IQ2_XXS, Q.I8, Q.MXFP4]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(st.tuples(st.sampled_from(TYPES), st.integers(0, 3), st.integers(1, 3)), min_size=0, max_size=4),
    alignment=st.sampled_from([None, 16, 64]),
    strs=st.lists(st.text(max_size=5), max_size=4),
    cut=st.integers(0, 4000),
    flips=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 255)), max_size=3),
)
def test_generated_files_round_trip_and_damage_keeps_every_byte(specs, alignment, strs, cut, flips) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "g.gguf"
        tensors = {}
        for i, (q, rows, blocks) in enumerate(specs):
            nbytes = gguf.GGML_QUANT_SIZES[q][1] * blocks
            tensors[f"t{i}"] = (np.full((max(rows, 1), nbytes), i, dtype=np.uint8), q)
        write(path, tensors, {"tok.list": ("array", strs or ["x"]), "n": ("array", [[1], [2, 3]])}, alignment)
        check_against_gguf_py(path)
        buf = path.read_bytes()
    damaged = bytearray(buf[:cut] if cut < len(buf) else buf)
    for at, x in flips:
        if at < len(damaged):
            damaged[at] ^= x
    got = detect(memoryview(bytes(damaged)))
    assert got.layout.size == len(damaged) and reassemble(bytes(damaged), got.layout) == bytes(damaged)


def model(path: Path, seed: int, scale: float = 0.0, meta: str = "v1") -> bytes:
    """A small llama-like GGUF: F32 norm, F16 embedding, Q8_0 and Q4_0 projections (requantized)."""
    from gguf.quants import quantize

    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0)
    tensors = {}
    for i in range(2):
        for proj in ("attn_q", "ffn_up"):
            w = base.standard_normal((64, 256)).astype(np.float32)
            w = w + scale * rng.standard_normal(w.shape).astype(np.float32) if proj == "attn_q" else w
            q = Q.Q8_0 if i == 0 else Q.Q4_0
            tensors[f"blk.{i}.{proj}.weight"] = (quantize(w, q), q)
        tensors[f"blk.{i}.attn_norm.weight"] = (np.ones(256, np.float32), None)
    tensors["token_embd.weight"] = (base.standard_normal((32, 256)).astype(np.float16), None)
    return write(path, tensors, {"general.name": ("string", meta), "tokenizer.ggml.tokens": ("array", ["a", "b"])})


def test_end_to_end_git_fine_tunes(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    assert "*.gguf filter=coral" in (repo / ".gitattributes").read_text()
    v1 = model(repo / "m.gguf", 1)
    git(repo, "add", "m.gguf")
    git(repo, "commit", "-qm", "v1")
    shown = git(repo, "show", "HEAD:m.gguf")
    lines = [line for line in shown.splitlines() if line.startswith("tensor ")]
    assert shown.startswith("coral-pointer") and " gguf " in shown.splitlines()[1] and len(lines) == 7
    assert any(line.startswith("tensor blk.1.ffn_up.weight Q4_0 [64,256] ") for line in lines)
    v2 = model(repo / "m.gguf", 2, scale=0.05)
    git(repo, "commit", "-qam", "v2 fine-tune")
    diff = coral(repo, "diff", "HEAD~1", "HEAD").stdout.decode()
    assert "blk.0.attn_q.weight" in diff and "blk.1.attn_q.weight" in diff
    assert "ffn_up" not in diff and "token_embd" not in diff
    v3 = model(repo / "m.gguf", 2, scale=0.05, meta="renamed model with a longer name")
    git(repo, "commit", "-qam", "v3 metadata edit")
    diff = coral(repo, "diff", "HEAD~1", "HEAD").stdout.decode()
    assert "weight" not in diff.replace("skeleton", "")
    for rev, want in (("HEAD~2", v1), ("HEAD~1", v2), ("HEAD", v3)):
        (repo / "m.gguf").unlink()
        git(repo, "checkout", "-q", rev, "--", "m.gguf")
        assert (repo / "m.gguf").read_bytes() == want


def test_metadata_item_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = write(tmp_path / "v.gguf", {"w": (np.ones(4, np.float32), None)}, {"tok": ("array", [f"t{i}" for i in range(500)])})
    assert len(reader.read(memoryview(buf)).tensors) == 1
    monkeypatch.setattr(reader, "MAX_ITEMS", 100)
    with pytest.raises(FormatError, match="more than 100"):
        reader.read(memoryview(buf))


@pytest.mark.parametrize("qname", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_dequantize_matches_gguf_py(qname: str) -> None:
    from gguf.quants import dequantize, quantize

    from coral_git.formats.ggml_dequant import dequantize as ours

    x = np.random.default_rng(1).standard_normal((4, 128)).astype(np.float32) * 5
    q = Q[qname]
    raw = quantize(x, q)
    got = ours(qname, raw.tobytes())
    assert got is not None and got.dtype == np.float32
    np.testing.assert_array_equal(got, dequantize(raw, q).reshape(-1))
    with pytest.raises(ValueError):
        ours(qname, raw.tobytes()[:-1])


def test_dequantize_unsupported_is_none() -> None:
    from coral_git.formats.ggml_dequant import dequantize as ours

    assert ours("Q4_K", bytes(144)) is None and ours("F32", bytes(4)) is None
