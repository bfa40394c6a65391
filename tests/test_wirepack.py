"""Wire packs: store objects as the local store holds them, in content-addressed packs with an index."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import git, make_state, perturb, save_safetensors

from coral_git import wirepack
from coral_git.errors import CorruptObjectError, StoreError
from coral_git.store.objects import unpack_header
from coral_git.store.packs import Pack


def stored_objects(repo: Path) -> list[tuple[str, bytes]]:
    """Every loose object of the repo's coral store, as (id, stored bytes)."""
    root = repo / ".git" / "coral" / "objects"
    out = []
    for d in sorted(root.iterdir()):
        if len(d.name) == 2:
            out += [(d.name + f.name, f.read_bytes()) for f in sorted(d.iterdir())]
    return out


@pytest.fixture
def objects(repo: Path) -> list[tuple[str, bytes]]:
    """Objects of two versions of a model: keyframes and deltas."""
    state = make_state(1, layers=4, width=512)
    for v in range(2):
        save_safetensors(repo / "model.safetensors", state)
        git(repo, "add", "model.safetensors")
        git(repo, "commit", "-qm", f"v{v}")
        state = perturb(state, v)
    objs = stored_objects(repo)
    assert any(unpack_header(c, d).base for c, d in objs), "the fixture should hold delta objects"
    return objs


def test_packs_round_trip_and_are_content_addressed(objects, tmp_path: Path) -> None:
    total = sum(len(d) for _, d in objects)
    packs = list(wirepack.build_packs(objects, tmp_path / "out", max_bytes=total // 3))
    assert len(packs) >= 3
    seen = {}
    for p in packs:
        data = p.path.read_bytes()
        assert p.oid == hashlib.sha256(data).hexdigest() and p.size == len(data) and p.path.name == f"{p.oid}.pack"
        raw_index = p.index_path.read_bytes()
        assert p.index_oid == hashlib.sha256(raw_index).hexdigest() and p.index_size == len(raw_index)
        index = wirepack.parse_index(raw_index, p.index_oid)
        assert index.pack_oid == p.oid and index.pack_size == p.size and len(index) == p.count
        reader = wirepack.file_range_reader(p.path)
        for e in index:
            seen[e.cid] = wirepack.read_object(e, reader)
    assert seen == dict(objects)  # every object, byte for byte, no re-encoding
    # a wire pack is a valid local pack: it can go into coral/packs as it is
    local = Pack(packs[0].path)
    cid = next(iter(wirepack.parse_index(packs[0].index_path.read_bytes())))
    assert local.read_entry(local.entry(local.find(cid.cid))) == dict(objects)[cid.cid]
    local.close()


def test_same_objects_give_the_same_pack(objects, tmp_path: Path) -> None:
    a = [p.oid for p in wirepack.build_packs(objects, tmp_path / "a")]
    b = [p.oid for p in wirepack.build_packs(objects, tmp_path / "b")]
    assert a == b and len(a) == 1  # a retried push names the same LFS objects


def test_index_records_delta_bases_and_chain_planning(objects, tmp_path: Path) -> None:
    (p,) = wirepack.build_packs(objects, tmp_path / "out")
    index = wirepack.parse_index(p.index_path.read_bytes(), p.index_oid)
    stored = dict(objects)
    for e in index:
        assert e.base == unpack_header(e.cid, stored[e.cid]).base
    delta = next(e for e in index if e.base)
    plan = wirepack.chain(delta.cid, index.find)
    assert plan[0].cid == delta.cid and plan[-1].base is None and len(plan) >= 2
    assert wirepack.chain(delta.cid, index.find, have=lambda c: c == delta.base) == [delta]
    with pytest.raises(StoreError, match="in no pack index"):
        wirepack.chain(delta.cid, lambda c: index.find(c) if c == delta.cid else None)


def test_damaged_index_and_pack_are_refused(objects, tmp_path: Path) -> None:
    (p,) = wirepack.build_packs(objects, tmp_path / "out")
    raw = bytearray(p.index_path.read_bytes())
    with pytest.raises(StoreError, match="sha256"):
        wirepack.parse_index(bytes(raw[:-1]) + b"\x00", p.index_oid)
    with pytest.raises(StoreError, match="claims"):
        wirepack.parse_index(bytes(raw[:-3]))
    index = wirepack.parse_index(bytes(raw))
    e = max(index, key=lambda e: e.length)
    data = bytearray(p.path.read_bytes())
    data[e.offset + e.length - 1] ^= 0xFF
    with pytest.raises(CorruptObjectError, match="do not match"):
        wirepack.read_object(e, lambda off, n: bytes(data[off : off + n]))


def test_oversized_object_gets_its_own_pack(objects, tmp_path: Path) -> None:
    biggest = max(len(d) for _, d in objects)
    limit = biggest - 1
    packs = list(wirepack.build_packs(objects, tmp_path / "out", max_bytes=limit))
    sizes = dict((c, len(d)) for c, d in objects)
    for p in packs:
        held = [e.cid for e in wirepack.parse_index(p.index_path.read_bytes())]
        assert len(held) == 1 or sum(sizes[c] for c in held) <= limit
    assert sum(p.count for p in packs) == len(objects)
    assert any(p.count == 1 and sizes[next(iter(wirepack.parse_index(p.index_path.read_bytes()))).cid] == biggest for p in packs)
