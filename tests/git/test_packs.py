"""Pack files: exact random access by id, atomic writes, repacking that never loses a needed object."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, make_state, perturb, save_safetensors, sha256
from hypothesis import given, settings
from hypothesis import strategies as st

from coral_git.git.repo import find_repo
from coral_git.store import packs
from coral_git.store.chunkstore import ChunkStore, chunk_id

ids = st.binary(min_size=16, max_size=16).map(bytes.hex)


@settings(max_examples=40, deadline=None)
@given(st.lists(ids, min_size=1, max_size=40, unique=True), st.lists(ids, max_size=10))
def test_every_id_is_found_and_others_are_not(tmp_path_factory, present: list[str], absent: list[str]) -> None:
    root = tmp_path_factory.mktemp("packs")
    items = [packs.PackItem(c, 1000 + k, (lambda c=c: c.encode() * 3)) for k, c in enumerate(present)]
    pack = packs.Pack(packs.write_pack(root, items))
    for k, c in enumerate(present):
        i = pack.find(c)
        assert i is not None
        e = pack.entry(i)
        assert e.cid == c and e.mtime == 1000 + k
        assert pack.read_entry(e) == c.encode() * 3
    for c in absent:
        if c not in present:
            assert pack.find(c) is None


def test_ids_with_zero_bytes(tmp_path: Path) -> None:
    tricky = ["7c" + "00" * 15, "00" * 16, "7c98645634f6f67ca772723732365c00", "ff" * 16, "00" * 15 + "01"]
    pack = packs.Pack(packs.write_pack(tmp_path, [packs.PackItem(c, 0, (lambda c=c: bytes.fromhex(c))) for c in tricky]))
    assert [pack.entry(pack.find(c)).cid for c in tricky] == tricky
    assert pack.find("7c" + "00" * 14 + "01") is None


def filled_store(root: Path, n: int = 6) -> tuple[ChunkStore, dict[str, bytes]]:
    """A store holding ``n`` versions of a chunk (keyframe + delta chain) and some unrelated ones."""
    store = ChunkStore(root, max_chain=16, add_chain=16)  # deep chains on purpose: what repack must bound
    rng = np.random.default_rng(0)
    raws: dict[str, bytes] = {}
    cur = (rng.standard_normal(4096) * 0.02).astype(np.float32)
    prev = None
    for _ in range(n):
        raw = cur.view(np.uint8)
        cid = chunk_id(raw)
        store.put(raw, 4, base=prev)
        raws[cid] = raw.tobytes()
        prev = cid
        cur = cur + (rng.standard_normal(4096) * 1e-4).astype(np.float32)
    for k in range(3):
        raw = rng.integers(0, 255, 1000 + k, dtype=np.uint8)
        store.put(raw, 1)
        raws[chunk_id(raw)] = raw.tobytes()
    packs.attach(store)
    return store, raws


def loose_files(store: ChunkStore) -> list[str]:
    return store.loose.ids()


def test_repack_moves_everything_and_reads_stay_exact(tmp_path: Path) -> None:
    store, raws = filled_store(tmp_path / "coral")
    assert any(store.header(c).base for c in raws), "the store should hold deltas"
    with store.lock():
        res = packs.repack(store)
    assert res.packed == len(raws) and res.loose_removed == len(raws)
    assert loose_files(store) == []
    assert len(list((tmp_path / "coral" / "packs").glob("pack-*.pack"))) == 1
    fresh = ChunkStore(tmp_path / "coral")  # another process: finds the pack through attach
    packs.attach(fresh)
    for cid, raw in raws.items():
        assert fresh.get(cid).tobytes() == raw


def test_repack_drops_only_what_it_is_told(tmp_path: Path) -> None:
    store, raws = filled_store(tmp_path / "coral")
    with store.lock():
        packs.repack(store)
    victim = next(c for c in raws if store.header(c).base is None and not any(store.header(o).base == c for o in raws))
    with store.lock():
        res = packs.repack(store, drop={victim})
    assert res.dropped == 1 and res.packs_removed == 1
    assert not store.has(victim)
    for cid, raw in raws.items():
        if cid != victim:
            assert store.get(cid).tobytes() == raw


def test_pack_written_by_another_process_is_found(tmp_path: Path) -> None:
    store, raws = filled_store(tmp_path / "coral")
    reader = ChunkStore(tmp_path / "coral")
    packs.attach(reader)
    cid = next(iter(raws))
    assert reader.get(cid).tobytes() == raws[cid]  # loose
    with store.lock():
        packs.repack(store)
    assert reader.get(cid).tobytes() == raws[cid]  # loose gone: the reader rescans and finds the pack


def test_crash_while_packing_leaves_the_old_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, raws = filled_store(tmp_path / "coral")
    before = sorted(loose_files(store))

    def crash(*a, **k):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(packs.os, "replace", crash)
    with pytest.raises(OSError), store.lock():
        packs.repack(store)
    monkeypatch.undo()
    assert sorted(loose_files(store)) == before
    assert os.listdir(tmp_path / "coral" / "packs") == []  # no temp file left behind
    for cid, raw in raws.items():
        assert store.get(cid).tobytes() == raw


def test_rekey_bounds_chains(tmp_path: Path) -> None:
    store, raws = filled_store(tmp_path / "coral", n=8)

    def depth(c: str) -> int:
        d = 0
        while (c := store.header(c).base) is not None:
            d += 1
        return d

    assert max(depth(c) for c in raws) >= 4
    with store.lock():
        res = packs.repack(store, max_chain=2)
    assert res.rekeyed > 0
    assert max(depth(c) for c in raws) <= 2
    for cid, raw in raws.items():
        assert store.get(cid).tobytes() == raw


def test_many_packs_are_consolidated(tmp_path: Path) -> None:
    store, raws = filled_store(tmp_path / "coral")
    rng = np.random.default_rng(1)
    for _ in range(4):
        raw = rng.integers(0, 255, 500, dtype=np.uint8)
        store.put(raw, 1)
        raws[chunk_id(raw)] = raw.tobytes()
        with store.lock():
            packs.repack(store, max_packs=3)
    assert len(list((tmp_path / "coral" / "packs").glob("pack-*.pack"))) <= 3
    for cid, raw in raws.items():
        assert store.get(cid).tobytes() == raw


def test_checkout_from_packs_end_to_end(repo: Path) -> None:
    digests = {}
    state = make_state(0, layers=2, width=96)
    for i in range(3):
        save_safetensors(repo / "m.safetensors", state)
        digests[i] = sha256(repo / "m.safetensors")
        git(repo, "add", "m.safetensors")
        git(repo, "commit", "-qm", f"v{i}")
        git(repo, "tag", f"v{i}")
        state = perturb(state, i + 1)
    out = coral(repo, "repack")
    assert "repack:" in out.stderr.decode()
    store = find_repo(repo).store
    assert store.loose.ids() == []
    for i, digest in digests.items():
        (repo / "m.safetensors").unlink()
        git(repo, "checkout", "-q", f"v{i}")
        assert sha256(repo / "m.safetensors") == digest
    # a new version after packing is stored loose; its older version in the pack becomes a delta
    git(repo, "checkout", "-q", "main")
    save_safetensors(repo / "m.safetensors", perturb(state, 9))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v3")
    (repo / "m.safetensors").unlink()
    git(repo, "checkout", "-q", "v2")
    assert sha256(repo / "m.safetensors") == digests[2]
    assert coral(repo, "fsck").returncode == 0


def test_full_repack_twice_keeps_everything(tmp_path: Path) -> None:
    """Packs are named by content: rewriting a pack into the same content must not delete it."""
    store, raws = filled_store(tmp_path / "coral")
    for _ in range(3):
        with store.lock():
            packs.repack(store, full=True)
    assert len(list((tmp_path / "coral" / "packs").glob("pack-*.pack"))) == 1
    for cid, raw in raws.items():
        assert store.get(cid).tobytes() == raw
