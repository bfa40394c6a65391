"""Fast unit tests: chunk grid, codecs, pointer text, store objects."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coral_git.core import pointer as ptr
from coral_git.core.chunking import chunk_shape, tensor_chunks
from coral_git.errors import CorruptObjectError, MissingObjectError, PointerError
from coral_git.formats.layout import itemsize
from coral_git.store.chunkstore import ChunkStore, chunk_id
from coral_git.store.codecs import Codec, codec


@given(
    shape=st.lists(st.integers(0, 40), min_size=0, max_size=4).map(tuple),
    dtype=st.sampled_from(["F32", "BF16", "F64", "U8", "I64"]),
    target=st.sampled_from([64, 1000, 4096]),
)
@settings(max_examples=300, deadline=None)
def test_chunks_tile_the_tensor_on_a_regular_grid(shape: tuple[int, ...], dtype: str, target: int) -> None:
    nbytes = math.prod(shape) * itemsize(dtype)
    ranges = tensor_chunks(dtype, shape, nbytes, target)
    if nbytes == 0:
        assert ranges == []
        return
    assert ranges[0][0] == 0 and ranges[-1][1] == nbytes
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    cs = chunk_shape(shape, itemsize(dtype), target)
    grid = [math.ceil(s / c) for s, c in zip(shape, cs, strict=True)]
    assert len(ranges) == math.prod(grid)
    full = math.prod(cs) * itemsize(dtype)
    assert max(e - s for s, e in ranges) <= max(full, itemsize(dtype))
    if full > itemsize(dtype):
        assert full <= max(target, itemsize(dtype) * max(shape[-1:] or [1]))


@pytest.mark.parametrize("code", sorted(Codec.registry))
@pytest.mark.parametrize("elem", [1, 2, 4, 8])
def test_codecs_are_lossless_on_bit_patterns(code: int, elem: int) -> None:
    rng = np.random.default_rng(code * 10 + elem)
    base = rng.standard_normal(4096).astype(np.float32).view(np.uint8)
    new = (base.view(np.float32) + np.float32(1e-3)).view(np.uint8).copy()
    new[:16] = 0xFF  # NaN patterns must survive too
    c = codec(code)
    payload = c.encode(new, elem, base)
    assert np.array_equal(c.decode(payload, elem, new.size, base), new)


def test_delta_of_a_small_update_beats_the_keyframe() -> None:
    rng = np.random.default_rng(0)
    base = (rng.standard_normal(1 << 18) * 0.02).astype(np.float32)
    new = base * (1 + rng.standard_normal(base.size).astype(np.float32) * 1e-4)
    key = codec(1).encode(new.view(np.uint8), 4)
    delta = codec(2).encode(base.view(np.uint8), 4, new.view(np.uint8))
    assert len(delta) < 0.75 * len(key)


def _pointer() -> ptr.Pointer:
    return ptr.Pointer(
        size=100,
        format="safetensors",
        file_id="0" * 32,
        chunk_bytes=1 << 20,
        skeleton_nbytes=60,
        skeleton=("a" * 32,),
        tensors=(
            ptr.TensorEntry("enc oder.ünïcode/weight%", "F32", (2, 5), 40, 40, ("b" * 32, "c" * 32)),
        ),
    )


def test_pointer_round_trips_and_is_ascii() -> None:
    p = _pointer()
    text = p.encode()
    assert text.decode("ascii").count("\n") == 6  # five lines + the check line
    assert ptr.parse(text) == p
    assert b" oder" not in text  # spaces in names are escaped


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace(b"F32", b"F32 x"),
        lambda t: t.replace(b"[2,5]", b"[2,05]"),
        lambda t: t + b"junk\n",
        lambda t: t[:-1],
        lambda t: t.replace(b"a" * 32, b"A" * 32),
        lambda t: t.replace(b"skeleton 60", b"skeleton 61"),
    ],
)
def test_pointer_parse_rejects_anything_not_canonical(mutate) -> None:
    with pytest.raises(PointerError):
        ptr.parse(mutate(_pointer().encode()))


def test_store_dedups_and_stores_the_new_version_as_a_delta_without_touching_the_old(tmp_path) -> None:
    store = ChunkStore(tmp_path / "coral")
    rng = np.random.default_rng(1)
    v1 = (rng.standard_normal(1 << 18) * 0.02).astype(np.float32)
    v2 = v1 * (1 + rng.standard_normal(v1.size).astype(np.float32) * 1e-4)
    a, b = v1.view(np.uint8), v2.view(np.uint8)
    assert store.put(a, 4) is True
    assert store.put(a, 4) is False  # exact dedup
    before = store.loose.path(chunk_id(a)).read_bytes()
    assert store.put(b, 4, base=chunk_id(a)) is True
    ha, hb = store.header(chunk_id(a)), store.header(chunk_id(b))
    assert ha.base is None and hb.base == chunk_id(a) and hb.run == 1
    assert store.loose.path(chunk_id(a)).read_bytes() == before  # what was stored is never rewritten
    assert store.loose.path(chunk_id(b)).stat().st_size < 0.75 * len(before)
    assert np.array_equal(store.get(chunk_id(a)), a)
    assert np.array_equal(store.get(chunk_id(b)), b)
    c = (v2 * 1.0001).astype(np.float32).view(np.uint8)
    store.put(c, 4, base=chunk_id(b))  # b is a delta already: c fans out from b's keyframe, a
    assert store.header(chunk_id(c)).base == chunk_id(a) and store.header(chunk_id(c)).run == 1
    assert np.array_equal(store.get(chunk_id(c)), c)


def test_store_chain_is_bounded(tmp_path) -> None:
    store = ChunkStore(tmp_path / "coral", max_chain=3)
    rng = np.random.default_rng(2)
    v = (rng.standard_normal(1 << 14) * 0.02).astype(np.float32)
    ids = []
    prev = None
    for _ in range(10):
        v = v * (1 + rng.standard_normal(v.size).astype(np.float32) * 1e-4)
        raw = v.view(np.uint8)
        store.put(raw, 4, base=prev)
        prev = chunk_id(raw)
        ids.append(prev)
    for cid in ids:
        depth, cur = 0, store.header(cid).base
        while cur:
            depth += 1
            cur = store.header(cur).base
        assert depth <= 3


def test_store_read_errors_name_the_chunk(tmp_path) -> None:
    store = ChunkStore(tmp_path / "coral")
    raw = np.arange(1000, dtype=np.uint8)
    store.put(raw, 1)
    cid = chunk_id(raw)
    with pytest.raises(MissingObjectError, match="f" * 32):
        store.get("f" * 32, "model.safetensors: tensor w")
    path = store.loose.path(cid)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.chmod(0o644)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptObjectError, match=cid):
        store.get(cid, "model.safetensors: tensor w")
