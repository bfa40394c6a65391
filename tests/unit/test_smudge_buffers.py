"""Smudge decodes into reused buffers (an output pool, per-thread scratch, objects read into place):
the bytes must be exactly those of fresh decodes, whatever the codec, element size, length or source."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from coral_git.errors import CorruptObjectError
from coral_git.filter.clean import clean
from coral_git.filter.direct import _BatchWriter
from coral_git.filter.smudge import smudge
from coral_git.store import packs
from coral_git.store.chunkstore import ChunkStore, chunk_id
from coral_git.store.codecs import Codec, codec, group_bytes, ungroup_bytes


def floats(n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32)


@pytest.mark.parametrize("elem", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [0, 8, 24, 4096, 4104])
def test_ungroup_inverts_group_into_a_given_buffer(elem: int, n: int) -> None:
    raw = np.random.default_rng(n + elem).integers(0, 256, n, dtype=np.uint8)
    planes = group_bytes(raw, elem)
    assert np.array_equal(ungroup_bytes(planes, elem), raw)
    out = np.full(n, 0xA5, dtype=np.uint8)
    assert ungroup_bytes(planes, elem, out) is out
    assert np.array_equal(out, raw)


@pytest.mark.parametrize("code", sorted(Codec.registry))
@pytest.mark.parametrize("itemsize", [1, 2, 4, 8])
@pytest.mark.parametrize("n", [1, 7, 4096, 4099])
def test_decode_into_out_equals_a_fresh_decode(code: int, itemsize: int, n: int) -> None:
    c = codec(code)
    base = floats(n, 1).view(np.uint8)[:n].copy()
    raw = base.copy()
    raw[::3] ^= np.uint8(1)  # a training step: low bits move
    raw[5::97] = 0xFF
    payload = c.encode(raw, itemsize, base if c.delta else None)
    fresh = c.decode(payload, itemsize, n, base if c.delta else None)
    assert np.array_equal(fresh, raw)
    for _ in range(2):  # the second time every scratch buffer is reused
        out = np.full(n, 0x5A, dtype=np.uint8)
        got = c.decode(memoryview(payload), itemsize, n, base if c.delta else None, out=out)
        assert got is out and np.array_equal(out, raw)
    with pytest.raises(ValueError):
        c.decode(payload, itemsize, n, base if c.delta else None, out=np.empty(n + 1, dtype=np.uint8))


def two_versions(chunk: int) -> tuple[bytes, bytes]:
    """A model whose tensors do not start on chunk boundaries, and a training step of it."""
    rng = np.random.default_rng(7)
    state = {"a": floats(5000, 2), "b": rng.standard_normal(3001).astype(np.float16), "c": floats(70000, 3),
             "d": np.arange(13, dtype=np.int64)}
    v1 = save(state)
    state["a"][:900] += np.float32(1e-3)
    state["c"] *= np.float32(1.0001)
    state["b"][7] = 1
    return v1, save(state)


def pack_everything(store: ChunkStore) -> None:
    """Move every loose object into one pack (what gc does), so reads go through the pack source."""
    ids = store.loose.ids()
    items = [packs.PackItem(c, 0, lambda c=c: store.loose.path(c).read_bytes()) for c in ids]
    packs.write_pack(store.root / "packs", items)
    for c in ids:
        store.loose.path(c).unlink()
    packs.attach(store)


@pytest.mark.parametrize("packed", [False, True])
def test_smudge_with_reused_buffers_rebuilds_every_version(tmp_path: Path, packed: bool) -> None:
    chunk = 16384
    v1, v2 = two_versions(chunk)
    store = ChunkStore(tmp_path / "store")
    p1 = clean(v1, store, chunk_bytes=chunk).pointer
    p2 = clean(v2, store, previous=p1, chunk_bytes=chunk).pointer
    assert any(store.header(c).base for c in p2.chunk_ids())  # the latest is stored as deltas
    if packed:
        pack_everything(store)
    for p, want in ((p1, v1), (p2, v2), (p1, v1)):
        for workers in (1, 3):
            got = bytearray()
            smudge(p, store, got.extend, workers=workers)  # the writer copies
            assert got == want
        # the direct checkout's writer: small pieces gathered, each chunk written before smudge reuses it
        fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            w = _BatchWriter(fd)
            smudge(p, store, w.write, workers=2)
            w.flush()
        finally:
            os.close(fd)
        assert (tmp_path / "out").read_bytes() == want


def test_get_results_never_share_memory_with_later_reads(tmp_path: Path) -> None:
    v1, v2 = two_versions(4096)
    store = ChunkStore(tmp_path / "store")
    p1 = clean(v1, store, chunk_bytes=4096).pointer
    p2 = clean(v2, store, previous=p1, chunk_bytes=4096).pointer
    ids = sorted(p1.chunk_ids() | p2.chunk_ids())
    kept = [store.get(c) for c in ids]  # fresh arrays: later gets on this thread must not touch them
    one = np.empty(1 << 16, dtype=np.uint8)
    for c in ids:
        assert chunk_id(store.get(c, alloc=lambda n: one[:n])) == c
    assert [chunk_id(k) for k in kept] == ids


def test_a_damaged_packed_object_is_refused(tmp_path: Path) -> None:
    v1, _ = two_versions(4096)
    store = ChunkStore(tmp_path / "store")
    p1 = clean(v1, store, chunk_bytes=4096).pointer
    pack_everything(store)
    [pack] = (tmp_path / "store" / "packs").glob("pack-*.pack")
    data = bytearray(pack.read_bytes())
    data[-100] ^= 0xFF  # inside the last object's payload
    pack.chmod(0o644)
    pack.write_bytes(bytes(data))
    store = ChunkStore(tmp_path / "store")
    packs.attach(store)
    with pytest.raises(CorruptObjectError):
        smudge(p1, store, lambda mv: None)


def test_deep_chains_decode_through_alternating_base_buffers(tmp_path: Path) -> None:
    """Chains deeper than two (allowed by coral.maxChain) use both kept base buffers in turn and
    fresh read buffers below the second object: every version still decodes to its id."""
    store = ChunkStore(tmp_path / "store", max_chain=5, add_chain=5)
    raw = floats(4096, 9).view(np.uint8)
    ids, prev = [], None
    for step in range(6):
        raw = raw.copy()
        raw[step * 7] ^= np.uint8(1 + step)
        store.put(raw, 4, base=prev)
        prev = chunk_id(raw)
        ids.append(prev)
    assert [store.header(c).run for c in ids] == [0, 1, 2, 3, 4, 5]
    reused = np.empty(raw.size, dtype=np.uint8)
    for c in reversed(ids):
        assert chunk_id(store.get(c)) == c
        assert chunk_id(store.get(c, alloc=lambda n: reused[:n])) == c
