"""Unit tests of tensordiff: dtype decoding, streaming statistics, renames, chunk alignment."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coral_git.diffs.tensordiff import Side, diff_files, hash_pointer, to_float64
from coral_git.filter.clean import clean
from coral_git.store.chunkstore import ChunkStore


@pytest.mark.parametrize(
    "code,tname",
    [("F8_E4M3", "float8_e4m3fn"), ("F8_E5M2", "float8_e5m2"), ("F8_E4M3FNUZ", "float8_e4m3fnuz"),
     ("F8_E5M2FNUZ", "float8_e5m2fnuz"), ("F8_E8M0", "float8_e8m0fnu")],
)  # fmt: skip
def test_fp8_decoding_matches_torch(code: str, tname: str) -> None:
    torch = pytest.importorskip("torch")
    if not hasattr(torch, tname):
        pytest.skip(f"torch has no {tname}")
    codes = np.arange(256, dtype=np.uint8)
    ours = to_float64(codes, code)
    theirs = torch.from_numpy(codes.copy()).view(getattr(torch, tname)).to(torch.float64).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    ok = ~np.isnan(ours)
    np.testing.assert_array_equal(ours[ok], theirs[ok])


def test_bf16_and_fp16_decoding() -> None:
    torch = pytest.importorskip("torch")
    x = torch.randn(1000, dtype=torch.float32) * 1e20
    b = x.to(torch.bfloat16)
    raw = b.view(torch.uint8).numpy()
    np.testing.assert_array_equal(to_float64(raw, "BF16"), b.to(torch.float64).numpy())
    h = np.random.default_rng(0).standard_normal(100).astype(np.float16)
    np.testing.assert_array_equal(to_float64(h.view(np.uint8), "F16"), h.astype(np.float64))


def _safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = v.tobytes()
        header[k] = {"dtype": {"float32": "F32", "float64": "F64", "complex64": "C64"}[v.dtype.name], "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def test_stats_across_different_chunk_sizes(tmp_path: Path) -> None:
    """Old and new stored with different chunk sizes: the chunk grids differ but stats stay exact."""
    store = ChunkStore(tmp_path / "store")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 77)).astype(np.float32)
    b = a.copy()
    b[100:140] *= 1.5
    pa = clean(_safetensors({"w": a}), store, chunk_bytes=4096).pointer
    pb = clean(_safetensors({"w": b}), store, chunk_bytes=5000).pointer
    fd = diff_files("m", Side(pa, store), Side(pb, store))
    [rec] = fd.tensors
    d = b.astype(np.float64) - a
    assert rec.delta_norm == pytest.approx(np.linalg.norm(d), rel=1e-12)
    assert rec.changed_elements == int(np.count_nonzero(a != b))
    assert rec.cosine == pytest.approx(float(a.ravel().astype(np.float64) @ b.ravel() / np.linalg.norm(a.astype(np.float64)) / np.linalg.norm(b.astype(np.float64))), rel=1e-12)


def test_same_chunks_only_feed_norms(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "store")
    a = np.arange(40000, dtype=np.float64).reshape(200, 200)
    b = a.copy()
    b[-1, -1] = -1.0
    pa = clean(_safetensors({"w": a}), store, chunk_bytes=4096).pointer
    pb = clean(_safetensors({"w": b}), store, chunk_bytes=4096).pointer
    [rec] = diff_files("m", Side(pa, store), Side(pb, store)).tensors
    assert rec.chunks_changed == 1 and rec.chunks_total == len(pb.tensors[0].chunks) > 10
    assert rec.old_norm == pytest.approx(np.linalg.norm(a), rel=1e-12)
    assert rec.new_norm == pytest.approx(np.linalg.norm(b), rel=1e-12)
    assert rec.max_abs == 40000.0 and rec.changed_elements == 1


def test_hash_pointer_matches_clean_and_stores_nothing(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "store")
    data = _safetensors({"x": np.ones((64, 64), np.float32), "c": np.ones(5, np.complex64)})
    p, src = hash_pointer(data, 4096)
    assert not (tmp_path / "store").exists()
    assert p == clean(data, store, chunk_bytes=4096).pointer
    for cid in p.chunk_ids():
        assert src.get(cid).tobytes() == store.get(cid).tobytes()


def test_rename_with_other_changes(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "store")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(500).astype(np.float32), rng.standard_normal(500).astype(np.float32)
    pa = clean(_safetensors({"a": x, "b": y}), store, chunk_bytes=4096).pointer
    pb = clean(_safetensors({"a2": x, "b": y * 2}), store, chunk_bytes=4096).pointer
    fd = diff_files("m", Side(pa, store), Side(pb, store), order="name")
    got = [(t.name, t.status, t.old_name) for t in fd.tensors]
    assert got == [("a2", "renamed", "a"), ("b", "modified", None)]
    assert fd.tensors[1].rel_change == pytest.approx(1.0, rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 60),
    cols=st.integers(1, 40),
    dtype=st.sampled_from(["float32", "float64"]),
    cb_old=st.integers(4096, 9000),
    cb_new=st.integers(4096, 9000),
    seed=st.integers(0, 2**16),
    frac=st.floats(0.0, 1.0),
)
def test_streamed_stats_match_numpy(rows: int, cols: int, dtype: str, cb_old: int, cb_new: int, seed: int, frac: float) -> None:
    """Any shapes and any two chunk sizes: streamed statistics equal numpy's on the whole arrays."""
    import tempfile

    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, cols)).astype(dtype)
    b = a.copy()
    mask = rng.random(a.shape) < frac
    b[mask] += rng.standard_normal(int(mask.sum())).astype(dtype)
    with tempfile.TemporaryDirectory() as d:
        store = ChunkStore(Path(d))
        pa = clean(_safetensors({"w": a}), store, chunk_bytes=cb_old).pointer
        pb = clean(_safetensors({"w": b}), store, chunk_bytes=cb_new).pointer
        fd = diff_files("m", Side(pa, store), Side(pb, store))
    if not (a != b).any():
        assert fd.tensors == [] and fd.unchanged == 1
        return
    [rec] = fd.tensors
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    assert rec.delta_norm == pytest.approx(np.linalg.norm(y - x), rel=1e-9)
    assert rec.max_abs == pytest.approx(np.abs(y - x).max(), rel=1e-12)
    assert rec.changed_elements == int(np.count_nonzero(a != b))
    assert rec.old_norm == pytest.approx(np.linalg.norm(x), rel=1e-9)
