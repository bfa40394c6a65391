"""Per-plane codecs (rot-planes keyframes, sub-zz-ctx-planes deltas): byte-exact round trips, old codecs
still readable through the store, damaged payloads refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coral_git.errors import CorruptObjectError
from coral_git.store.chunkstore import DELTA_CODEC, KEYFRAME_CODEC, ChunkStore, chunk_id
from coral_git.store.codecs import GroupZstdCodec, RotPlanesCodec, SubZigzagCodec, SubZigzagPlanesCodec, codec
from coral_git.store.objects import ObjectHeader

NAN_PATTERNS = {
    2: [0x7FC0, 0xFFFF, 0x7F81, 0xFE00, 0x7E00],  # bf16 / fp16 NaNs
    4: [0x7FC00000, 0xFFFFFFFF, 0x7F800001, 0xFFC00001, 0x7FBFFFFF],
    8: [0x7FF8000000000000, 0xFFFFFFFFFFFFFFFF, 0x7FF0000000000001],
}


def make_pair(kind: str, elem: int, n: int, tail: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(raw, base) byte arrays of n elements of ``elem`` bytes plus ``tail`` odd bytes."""
    rng = np.random.default_rng(seed)
    size = n * elem + tail
    if elem >= 2 and kind in ("float", "sparse", "nan"):
        ftype = {2: np.float16, 4: np.float32, 8: np.float64}[elem]
        base_f = (rng.standard_normal(n) * 0.05).astype(ftype)
        base = np.concatenate([base_f.view(np.uint8), rng.integers(0, 256, tail, dtype=np.uint8)])
    else:
        base = rng.integers(0, 256, size, dtype=np.uint8)
    raw = base.copy()
    if kind == "random":
        raw = rng.integers(0, 256, size, dtype=np.uint8)
    elif kind == "float" and n:
        body = raw[: n * elem].view({1: np.uint8, 2: np.float16, 4: np.float32, 8: np.float64}[elem])
        if elem == 1:
            body += rng.integers(0, 3, n, dtype=np.uint8)
        else:
            body *= (1 + rng.standard_normal(n) * 1e-3).astype(body.dtype)
    elif kind == "sparse" and n:
        idx = rng.choice(n, size=max(1, n // 20), replace=False)
        u = raw[: n * elem].view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[elem])
        u[idx] += rng.integers(1, 300, idx.size).astype(u.dtype)
    elif kind == "nan" and n:
        u = raw[: n * elem].view({1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[elem])
        pats = NAN_PATTERNS.get(elem, [0xFF, 0x7F, 0x80])
        idx = rng.choice(n, size=max(1, n // 4), replace=False)
        u[idx] = np.array(pats, dtype=u.dtype)[rng.integers(0, len(pats), idx.size)]
        if n > 1:
            bu = base[: n * elem].view(u.dtype)
            bu[: n // 2] = pats[0]  # NaNs in the base too (the exponent context sees them)
    # kind == "zero": raw is base, every delta element is 0
    if tail:
        raw[-tail:] = rng.integers(0, 256, tail, dtype=np.uint8) if kind != "zero" else raw[-tail:]
    return raw, base


pairs = st.builds(
    make_pair,
    kind=st.sampled_from(["random", "zero", "sparse", "float", "nan"]),
    elem=st.sampled_from([1, 2, 4, 8]),
    n=st.integers(0, 3000),
    tail=st.sampled_from([0, 0, 1, 3]),
    seed=st.integers(0, 2**32 - 1),
)


@given(pair=pairs, itemsize=st.sampled_from([None, 1, 2, 4, 8]))
@settings(max_examples=400, deadline=None)
def test_delta_codec_round_trips_byte_exact(pair: tuple[np.ndarray, np.ndarray], itemsize: int | None) -> None:
    raw, base = pair
    c = SubZigzagPlanesCodec()
    for e in sorted({itemsize or 1, 1, 2, 4, 8}):
        payload = c.encode(raw, e, base)
        out = c.decode(payload, e, raw.size, base.copy())
        assert out.tobytes() == raw.tobytes()


@given(pair=pairs)
@settings(max_examples=300, deadline=None)
def test_keyframe_codec_round_trips_byte_exact(pair: tuple[np.ndarray, np.ndarray]) -> None:
    raw, _ = pair
    c = RotPlanesCodec()
    for e in (1, 2, 4, 8):
        assert c.decode(c.encode(raw, e), e, raw.size).tobytes() == raw.tobytes()


@pytest.mark.parametrize("elem", [1, 2, 4, 8])
def test_all_zero_delta_costs_only_the_mask(elem: int) -> None:
    base = np.random.default_rng(elem).integers(0, 256, 1 << 16, dtype=np.uint8)
    payload = SubZigzagPlanesCodec().encode(base.copy(), elem, base)
    assert len(payload) < 100
    assert np.array_equal(SubZigzagPlanesCodec().decode(payload, elem, base.size, base), base)


def test_new_delta_codec_beats_the_old_one_on_a_fine_tune() -> None:
    rng = np.random.default_rng(0)
    base = (rng.standard_normal(1 << 18) * 0.02).astype(np.float32)
    new = base + (rng.standard_normal(base.size) * 1e-5).astype(np.float32)
    new[: 1 << 16] = base[: 1 << 16]  # a frozen stretch
    old = len(SubZigzagCodec().encode(new.view(np.uint8), 4, base.view(np.uint8)))
    v2 = len(SubZigzagPlanesCodec().encode(new.view(np.uint8), 4, base.view(np.uint8)))
    assert v2 < 0.95 * old


@pytest.mark.parametrize(
    "damage",
    [lambda p: p[:-1], lambda p: p + b"\0", lambda p: bytes([7]) + p[1:], lambda p: p[:3]],
    ids=["truncated", "trailing", "bad-mode", "cut-head"],
)
@pytest.mark.parametrize("kernels", [True, False], ids=["numba", "numpy"])
def test_damaged_delta_payload_is_refused(damage, kernels: bool) -> None:
    raw, base = make_pair("float", 4, 5000, 0, 1)
    c = SubZigzagPlanesCodec(kernels=kernels)
    with pytest.raises(ValueError):
        c.decode(damage(c.encode(raw, 4, base)), 4, raw.size, base)


def test_store_writes_new_codecs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = (rng.standard_normal(1 << 16) * 0.02).astype(np.float32)
    b = a + (rng.standard_normal(a.size) * 1e-4).astype(np.float32)
    s = ChunkStore(tmp_path / "coral")
    ida, idb = chunk_id(a.view(np.uint8)), chunk_id(b.view(np.uint8))
    s.put(a.view(np.uint8), 4)
    s.put(b.view(np.uint8), 4, base=ida)
    assert s.header(ida).codec == KEYFRAME_CODEC == GroupZstdCodec.code
    assert s.header(idb).codec == DELTA_CODEC and s.header(idb).base == ida
    assert s.get(ida).tobytes() == a.tobytes() and s.get(idb).tobytes() == b.tobytes()


def test_objects_of_the_old_codecs_still_decode(tmp_path: Path) -> None:
    """A v1 store (keyframe bg-zstd, delta sub-zz-bg-zstd) read and extended by this version."""
    rng = np.random.default_rng(4)
    v1 = (rng.standard_normal(1 << 16) * 0.02).astype(np.float32).view(np.uint8)
    v2 = (v1.view(np.float32) * np.float32(1.001)).view(np.uint8)
    v3 = (v2.view(np.float32) + np.float32(1e-5)).view(np.uint8)
    s = ChunkStore(tmp_path / "coral")
    id1, id2, id3 = (chunk_id(x) for x in (v1, v2, v3))
    # written as the previous version wrote them: v2 keyframe (1), v1 delta against it (2);
    # a keyframe of codec 4 is read too (nothing writes it by default)
    s.loose.write(id2, ObjectHeader(1, 4, 0, v2.size, None).pack() + GroupZstdCodec().encode(v2, 4))
    id0 = chunk_id(v1[::-1].copy())
    s.loose.write(id0, ObjectHeader(4, 4, 0, v1.size, None).pack() + RotPlanesCodec().encode(v1[::-1].copy(), 4))
    assert s.get(id0).tobytes() == v1[::-1].tobytes()
    s.loose.write(id1, ObjectHeader(2, 4, 1, v1.size, id2).pack() + SubZigzagCodec().encode(v1, 4, v2))
    assert s.get(id1).tobytes() == v1.tobytes() and s.get(id2).tobytes() == v2.tobytes()
    for code in (1, 2):
        assert codec(code).decode  # still registered
    # a new version arrives: stored as a delta on the old keyframe v2; nothing stored is rewritten
    s.put(v3, 4, base=id2)
    assert s.header(id3).codec == DELTA_CODEC and s.header(id3).base == id2
    assert s.header(id2).codec == 1 and s.header(id2).base is None
    assert s.header(id1).codec == 2 and s.header(id1).base == id2
    assert [s.get(i).tobytes() for i in (id1, id2, id3)] == [v1.tobytes(), v2.tobytes(), v3.tobytes()]


def test_store_reports_a_damaged_new_delta_as_corrupt(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    a = (rng.standard_normal(1 << 14) * 0.02).astype(np.float32).view(np.uint8)
    b = (a.view(np.float32) + np.float32(1e-4)).view(np.uint8)
    s = ChunkStore(tmp_path / "coral")
    ida = chunk_id(a)
    s.put(a, 4)
    s.put(b, 4, base=ida)
    data = s.loose.read(ida)
    assert data is not None
    path = s.loose.path(ida)
    path.chmod(0o644)
    path.write_bytes(data[:-7])
    with pytest.raises(CorruptObjectError):
        s.get(ida)


@given(junk=st.binary(max_size=400), elem=st.sampled_from([1, 2, 4, 8]), n=st.integers(0, 200))
@settings(max_examples=300, deadline=None)
def test_junk_payloads_fail_cleanly(junk: bytes, elem: int, n: int) -> None:
    """Arbitrary bytes either decode to the declared length or raise what the store turns into a
    one-line corrupt-object error (ValueError, RuntimeError, TypeError), never anything else."""
    base = np.arange(n * elem, dtype=np.uint8)
    for c, b in (
        (SubZigzagPlanesCodec(kernels=True), base),
        (SubZigzagPlanesCodec(kernels=False), base),
        (RotPlanesCodec(), None),
    ):
        try:
            out = c.decode(junk, elem, base.size, b)
        except (ValueError, RuntimeError, TypeError):
            continue
        assert out.size == base.size


@given(pos=st.integers(0, 10**6), val=st.integers(0, 255), kind=st.sampled_from(["float", "sparse", "nan"]))
@settings(max_examples=300, deadline=None)
def test_damaged_valid_payloads_fail_cleanly(pos: int, val: int, kind: str) -> None:
    raw, base = make_pair(kind, 4, 700, 0, pos)
    p = bytearray(SubZigzagPlanesCodec().encode(raw, 4, base))
    p[pos % len(p)] = val
    for c in (SubZigzagPlanesCodec(kernels=True), SubZigzagPlanesCodec(kernels=False)):
        try:
            out = c.decode(bytes(p), 4, raw.size, base)
        except (ValueError, RuntimeError, TypeError):
            continue
        assert out.size == raw.size  # wrong bytes are caught by the store's id check


@given(pair=pairs, itemsize=st.sampled_from([1, 2, 4, 8]))
@settings(max_examples=300, deadline=None)
def test_compiled_kernels_write_and_read_the_reference_bytes(
    pair: tuple[np.ndarray, np.ndarray], itemsize: int
) -> None:
    """The numba kernels (counting sorts) and the numpy reference (argsort) are one format: each encodes
    to the same payload and decodes the other's."""
    raw, base = pair
    fast, ref = SubZigzagPlanesCodec(kernels=True), SubZigzagPlanesCodec(kernels=False)
    assert fast.kernels is not None and ref.kernels is None
    p = fast.encode(raw, itemsize, base)
    assert p == ref.encode(raw, itemsize, base)
    assert fast.decode(p, itemsize, raw.size, base).tobytes() == raw.tobytes()
    assert ref.decode(p, itemsize, raw.size, base).tobytes() == raw.tobytes()


def test_codec_switches_to_the_kernels_after_enough_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """numba's start-up cost is paid only by a process that codes a lot of codec-5 data; the payloads
    before and after the switch are the same bytes."""
    monkeypatch.setattr(SubZigzagPlanesCodec, "KERNELS_AFTER", 3 * 4096)
    raw, base = make_pair("float", 4, 1024, 0, 9)
    c = SubZigzagPlanesCodec()
    assert c.kernels is None
    first = c.encode(raw, 4, base)
    assert c.decode(first, 4, raw.size, base).tobytes() == raw.tobytes()
    assert c.kernels is None
    assert c.encode(raw, 4, base) == first
    assert c.kernels is not None
    assert c.decode(first, 4, raw.size, base).tobytes() == raw.tobytes()


@pytest.mark.parametrize("elem", [2, 4, 8])
@pytest.mark.parametrize("shape", ["one-class", "sparse", "dense", "one-change"])
def test_kernel_paths_agree_with_the_reference(shape: str, elem: int) -> None:
    """The kernels' shortcuts — one class holding every change (no class sort), few changes (only they are
    visited), every element changed — write and read the reference's bytes."""
    rng = np.random.default_rng(elem)
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[elem]
    base = rng.integers(0, np.iinfo(u).max, 50_000, dtype=u)
    raw = base.copy()
    if shape == "one-class":
        raw += rng.integers(1, 100, raw.size).astype(u)  # every delta fits in one byte
    elif shape == "sparse":
        idx = rng.choice(raw.size, raw.size // 20, replace=False)
        raw[idx] += rng.integers(1, 1 << (4 * elem), idx.size).astype(u)
    elif shape == "dense":
        raw += rng.integers(1, 1 << (6 * elem), raw.size).astype(u)
    else:
        raw[12_345] += u(7)
    r, b = raw.view(np.uint8), base.view(np.uint8)
    fast, ref = SubZigzagPlanesCodec(kernels=True), SubZigzagPlanesCodec(kernels=False)
    p = fast.encode(r, elem, b)
    assert p == ref.encode(r, elem, b)
    out = np.empty(r.size, np.uint8)
    assert fast.decode(p, elem, r.size, b, out=out) is out and out.tobytes() == r.tobytes()
    assert ref.decode(p, elem, r.size, b).tobytes() == r.tobytes()
