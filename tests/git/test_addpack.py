"""A large ``git add`` streams its new objects into one pack (format version 2) instead of a loose
file each: readable at once, durable before git gets the pointer, an ordinary pack for gc, fsck
and checkout afterwards; a small change stays loose."""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import checkout_equals, coral, git, make_state, perturb, save_safetensors, sha256, verify_store

from coral_git.core.pointer import parse
from coral_git.errors import StoreError
from coral_git.store.addpack import AddPack
from coral_git.store.chunkstore import ChunkStore, chunk_id
from coral_git.store.packs import Pack, attach


def _packs(store: Path) -> list[Path]:
    return sorted((store / "packs").glob("pack-*.pack")) if (store / "packs").is_dir() else []


def _loose(store: Path) -> int:
    return len(ChunkStore(store).loose.ids())


def test_large_add_is_one_pack_and_gc_fsck_checkout_read_it(repo: Path, tmp_path: Path) -> None:
    store = repo / ".git" / "coral"
    git(repo, "config", "coral.addPackSize", "256k")  # the 1.2 MiB model below counts as large
    git(repo, "config", "coral.chunkSize", "64k")
    v1 = make_state(1)
    v1["layers.3.weight"] = v1["layers.2.weight"].copy()  # identical chunks: stored once in the pack
    save_safetensors(repo / "m.safetensors", v1)
    shas = [sha256(repo / "m.safetensors")]
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v1")
    (first,) = _packs(store)
    assert _loose(store) == 0
    magic, version, count, _index_at = struct.unpack_from("<4sIQQ", first.read_bytes())
    assert (magic, version) == (b"CRPK", 2)
    p1 = parse(git(repo, "cat-file", "blob", "HEAD:m.safetensors").encode())
    ids = p1.chunk_ids()
    named = len(p1.skeleton) + sum(len(t.chunks) for t in p1.tensors)
    assert count == Pack(first).count == len(ids) < named  # each chunk once, though named twice
    save_safetensors(repo / "m.safetensors", perturb(v1, 2))
    shas.append(sha256(repo / "m.safetensors"))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v2")
    assert len(_packs(store)) == 2 and _loose(store) == 0
    cs = ChunkStore(store)
    attach(cs)
    second = Pack(next(p for p in _packs(store) if p != first))
    bases = {cs.header(e.cid).base for e in second.iter_entries()}
    assert bases & ids, "v2's chunks are deltas on v1's, read from v1's pack"
    assert [p.name for p in (store / "recent").iterdir()] == ["log"]  # one file, not one per tensor
    verify_store(repo, store)  # every object decodes; fsck passes
    for back, sha in enumerate(reversed(shas)):
        checkout_equals(repo, f"HEAD~{back}", "m.safetensors", sha, tmp_path)
    coral(repo, "gc", "--prune=now")  # ordinary packs for gc: everything reachable is kept
    verify_store(repo, store)
    for back, sha in enumerate(reversed(shas)):
        checkout_equals(repo, f"HEAD~{back}", "m.safetensors", sha, tmp_path)


def test_small_change_of_a_large_file_stays_loose(repo: Path) -> None:
    store = repo / ".git" / "coral"
    git(repo, "config", "coral.addPackSize", "512k")
    git(repo, "config", "coral.chunkSize", "64k")
    v1 = make_state(3)
    save_safetensors(repo / "m.safetensors", v1)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v1")
    assert len(_packs(store)) == 1
    save_safetensors(repo / "m.safetensors", perturb(v1, 4, keys=lambda k: k == "layers.0.weight"))
    git(repo, "add", "m.safetensors")
    assert len(_packs(store)) == 1 and 0 < _loose(store) <= 4  # 256 KiB of new chunks: loose, no pack
    assert not list((store / "packs").glob(".tmp-*"))
    verify_store(repo, store)


def test_add_pack_reads_before_finish_and_rejects_a_truncated_pack(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    chunks = [rng.integers(0, 255, 5000, dtype=np.uint8) for _ in range(3)]
    store = ChunkStore(tmp_path / "s")
    store.pack_adds = 1000
    assert store.begin_pack(10_000)
    lock = os.open(store.root / "lock", os.O_RDWR)
    with pytest.raises(OSError):  # gc (an exclusive lock) waits for the pack being written
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    ids = [chunk_id(c) for c in chunks]
    assert store.put(chunks[0], 1) and not store.put(chunks[0], 1)  # dedup inside the pack
    assert store.put(chunks[1], 1, base=ids[0])
    assert store.get(ids[1]).tobytes() == chunks[1].tobytes()  # readable before the pack is renamed
    assert not list((store.root / "packs").glob("pack-*"))
    store.sync()
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released once the pack is in place
    os.close(lock)
    (path,) = (store.root / "packs").glob("pack-*.pack")
    assert Pack(path).count == 2 and not list((store.root / "objects").rglob("*"))
    fresh = ChunkStore(store.root)
    attach(fresh)
    assert fresh.get(ids[1]).tobytes() == chunks[1].tobytes()
    cut = tmp_path / "pack-cut.pack"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError):
        Pack(cut)
    # an aborted add leaves nothing; a failed write is one StoreError
    assert store.begin_pack(10_000) and store.put(chunks[2], 1)
    store.abort_pack()
    assert not store.has(ids[2]) and not list((store.root / "packs").glob(".tmp-*"))
    ap = AddPack(store.root / "packs")
    os.close(ap.fd)
    with pytest.raises(StoreError, match="cannot write to"):
        ap.add("0" * 32, b"x" * 10)
    ap.fd = -1
    ap.abort()


def test_objects_in_an_add_pack_are_the_loose_objects_byte_for_byte(tmp_path: Path) -> None:
    from helpers import perturb as nudge

    from coral_git.filter.clean import clean

    v1 = make_state(5)
    files = [save_safetensors(tmp_path / f"v{k}.safetensors", s).read_bytes() for k, s in enumerate((v1, nudge(v1, 6)))]
    stores = []
    for name, threshold in (("loose", 0), ("packed", 1024)):
        store = ChunkStore(tmp_path / name)
        store.pack_adds = threshold
        attach(store)
        prev = None
        for data in files:
            prev = clean(data, store, previous=prev, chunk_bytes=1 << 16).pointer
        stores.append(store)
    loose, packed = stores
    ids = loose.loose.ids()
    assert ids and not packed.loose.ids() and len(_packs(packed.root)) == 2
    for cid in ids:
        assert packed.read_object(cid) == loose.read_object(cid)


def test_adds_packs_count_for_auto_gc_which_folds_them(repo: Path, tmp_path: Path) -> None:
    """Large adds leave no loose objects, yet their packs are what adds wrote since the last gc: they
    start ``gc --auto`` like loose bytes would, and gc gathers them into its own (version 1) packs."""
    from test_auto_gc import wait_for_gc

    store = repo / ".git" / "coral"
    git(repo, "config", "coral.addPackSize", "256k")
    git(repo, "config", "coral.chunkSize", "64k")
    git(repo, "config", "coral.gc.autoBytes", "1m")  # one ~1.2 MiB add pack is past it
    state, shas = make_state(5), []
    for v in range(2):
        state = perturb(state, 10 + v) if v else state
        save_safetensors(repo / "m.safetensors", state)
        shas.append(sha256(repo / "m.safetensors"))
        git(repo, "add", "m.safetensors")
        git(repo, "commit", "-qm", f"v{v}")
        wait_for_gc(store)
    assert "gc --auto:" in (store / "gc.log").read_text()  # the adds' packs started it: no loose object did
    versions = [struct.unpack_from("<4sI", p.read_bytes())[1] for p in _packs(store)]
    assert versions and 2 not in versions, f"gc left an add's pack unfolded: {versions}"
    assert _loose(store) == 0
    verify_store(repo, store)
    for back, sha in enumerate(reversed(shas)):
        checkout_equals(repo, f"HEAD~{back}", "m.safetensors", sha, tmp_path)


def test_an_add_while_gc_holds_the_lock_packs_keyframes_only(repo: Path, tmp_path: Path) -> None:
    """A training loop's save while a background gc holds the store lock: the add does not wait and
    does not scatter loose files; its pack holds keyframes only (nothing a running gc could take
    the base of), and everything checks out once gc lets go."""
    store = repo / ".git" / "coral"
    git(repo, "config", "coral.addPackSize", "256k")
    git(repo, "config", "coral.chunkSize", "64k")
    v1 = make_state(7)
    save_safetensors(repo / "m.safetensors", v1)
    shas = [sha256(repo / "m.safetensors")]
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v1")
    save_safetensors(repo / "m.safetensors", perturb(v1, 8))
    shas.append(sha256(repo / "m.safetensors"))
    lock = os.open(store / "lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # as gc does from its inventory to its sweep
    try:
        git(repo, "add", "m.safetensors")
        git(repo, "commit", "-qm", "v2")
    finally:
        os.close(lock)
    assert len(_packs(store)) == 2 and _loose(store) == 0
    cs = ChunkStore(store)
    attach(cs)
    p2 = parse(git(repo, "cat-file", "blob", "HEAD:m.safetensors").encode())
    p1 = parse(git(repo, "cat-file", "blob", "HEAD~1:m.safetensors").encode())
    new = p2.chunk_ids() - p1.chunk_ids()
    assert new and all(cs.header(c).base is None for c in new), "a delta was written without the lock"
    verify_store(repo, store)
    for back, sha in enumerate(reversed(shas)):
        checkout_equals(repo, f"HEAD~{back}", "m.safetensors", sha, tmp_path)
