"""Wire packs: built from a real chunk store, parsed, read by ranges, and carried through a real LFS server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from helpers.lfs_server import LfsServer, lfs_server  # noqa: F401 - fixture

from coral_git.errors import CorruptObjectError, StoreError
from coral_git.remote.lfs import Endpoint, LfsClient, LfsObject
from coral_git.remote.wirepack import WireItem, build_packs, chain, file_range_reader, parse_index, read_object
from coral_git.store.chunkstore import ChunkStore, chunk_id


def make_store(root: Path, n_chunks: int = 12, versions: int = 3, chunk: int = 64 << 10) -> tuple[ChunkStore, dict[str, np.ndarray]]:
    """A store holding ``versions`` fine-tuning-like versions of ``n_chunks`` float32 chunks (older ones as deltas)."""
    store = ChunkStore(root)
    rng = np.random.default_rng(7)
    raws: dict[str, np.ndarray] = {}
    prev: list[str | None] = [None] * n_chunks
    weights = [rng.standard_normal(chunk // 4).astype(np.float32) for _ in range(n_chunks)]
    for _ in range(versions):
        for i in range(n_chunks):
            weights[i] = weights[i] + rng.standard_normal(weights[i].size).astype(np.float32) * 1e-3
            raw = weights[i].view(np.uint8)
            cid = chunk_id(raw)
            store.put(raw, 4, base=prev[i])
            raws[cid] = raw.copy()
            prev[i] = cid
    return store, raws


def items(store: ChunkStore, cids) -> list[WireItem]:
    out = []
    for cid in cids:
        data = store.read_object_local(cid)
        assert data is not None
        out.append(WireItem(cid, len(data), lambda cid=cid: store.read_object_local(cid)))
    return out


def test_packs_hold_stored_bytes_and_rebuild_every_chunk(tmp_path: Path) -> None:
    store, raws = make_store(tmp_path / "store")
    deltas = [c for c in raws if store.header(c).base is not None]
    assert deltas, "the test store should hold delta-encoded objects"
    total = sum(len(store.read_object_local(c)) for c in raws)
    packs = list(build_packs(items(store, sorted(raws)), tmp_path / "out", max_bytes=total // 3))
    assert len(packs) >= 3
    assert sum(p.count for p in packs) == len(raws)

    located = {}
    for p in packs:
        pack_bytes = p.path.read_bytes()
        assert hashlib.sha256(pack_bytes).hexdigest() == p.oid == p.path.name.removesuffix(".pack")
        assert len(pack_bytes) == p.size <= total // 3 + 4096 + 1024 + 56 * p.count
        idx = parse_index(p.index_path.read_bytes(), p.index_oid)
        assert (idx.pack_oid, idx.pack_size, len(idx)) == (p.oid, p.size, p.count)
        for e in idx:
            data = read_object(e, file_range_reader(p.path))
            assert data == store.read_object_local(e.cid)  # byte for byte as the local store holds it
            assert e.base == store.header(e.cid).base
            located[e.cid] = (e, data)

    # a fresh store rebuilt from the packs alone decodes every chunk to its raw bytes
    fresh = ChunkStore(tmp_path / "fresh")
    for cid, (_, data) in located.items():
        fresh.loose.write(cid, data)
    for cid, raw in raws.items():
        assert np.array_equal(fresh.get(cid), raw)

    # the delta chain of the oldest version leads to a keyframe
    d = deltas[0]
    ch = chain(d, lambda c: located[c][0] if c in located else None)
    assert ch[0].cid == d and ch[-1].base is None and len(ch) >= 2
    assert chain(d, lambda c: located[c][0], have=lambda c: c == d) == []


def test_same_objects_give_the_same_pack_oid(tmp_path: Path) -> None:
    store, raws = make_store(tmp_path / "store", n_chunks=4, versions=1)
    a = list(build_packs(items(store, sorted(raws)), tmp_path / "a"))
    b = list(build_packs(items(store, sorted(raws)), tmp_path / "b"))
    assert [(p.oid, p.index_oid) for p in a] == [(p.oid, p.index_oid) for p in b]
    assert len(a) == 1


def test_big_object_gets_its_own_pack_and_duplicates_are_dropped(tmp_path: Path) -> None:
    store, raws = make_store(tmp_path / "store", n_chunks=3, versions=1)
    cids = sorted(raws)
    packs = list(build_packs(items(store, [*cids, cids[0]]), tmp_path / "out", max_bytes=1))
    assert [p.count for p in packs] == [1, 1, 1]


def test_damage_is_detected(tmp_path: Path) -> None:
    store, raws = make_store(tmp_path / "store", n_chunks=2, versions=1)
    (p,) = build_packs(items(store, sorted(raws)), tmp_path / "out")
    index = p.index_path.read_bytes()
    with pytest.raises(StoreError):
        parse_index(index[:-1] + bytes([index[-1] ^ 1]), p.index_oid)
    with pytest.raises(StoreError):
        parse_index(index[:-3])
    idx = parse_index(index)
    e = idx.entries[0]
    good = file_range_reader(p.path)

    def flipped(offset: int, length: int) -> bytes:
        data = bytearray(good(offset, length))
        data[-1] ^= 0xFF
        return bytes(data)

    with pytest.raises(CorruptObjectError):
        read_object(e, flipped)
    with pytest.raises(StoreError):
        chain("00" * 16, idx.find)


def test_wire_pack_through_a_real_lfs_server_read_by_range(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    store, raws = make_store(tmp_path / "store", n_chunks=8, versions=2)
    (p,) = build_packs(items(store, sorted(raws)), tmp_path / "out")
    client = LfsClient(Endpoint(lfs_server.lfs_url(), "test"), remote="origin")
    pack, index = LfsObject(p.oid, p.size), LfsObject(p.index_oid, p.index_size)
    assert client.has([pack, index]) == set()
    assert set(client.upload([(pack, p.path), (index, p.index_path)])) == {p.oid, p.index_oid}
    assert client.has([pack, index]) == {p.oid, p.index_oid}

    # a clone: downloads the small index, then reads single objects out of the pack
    client2 = LfsClient(Endpoint(lfs_server.lfs_url(), "test"), remote="origin")
    client2.download([(index, tmp_path / "idx")])
    idx = parse_index((tmp_path / "idx").read_bytes(), p.index_oid)
    action = client2.download_actions([pack])[pack.oid]
    wanted = idx.entries[len(idx) // 2]
    data = read_object(wanted, lambda off, n: client2.read_range(pack, off, n, action))
    assert data == store.read_object_local(wanted.cid)
    assert client2.range_supported is not None
