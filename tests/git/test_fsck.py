"""git coral fsck: finds flipped bytes, deleted objects, truncated packs and broken pointers, names
the files and revisions that need them, moves damaged objects aside and exits non-zero."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import copy_repo, coral, git, isolated_git, make_state, new_repo, perturb, save_safetensors

from coral_git.core import pointer as ptr
from coral_git.git.repo import find_repo
from coral_git.maintenance.fsck import fsck
from coral_git.store import packs

MODEL = "model.safetensors"


@pytest.fixture(scope="module")
def two_versions_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with isolated_git(tmp_path_factory.mktemp("home")):
        return build_two_versions(new_repo(tmp_path_factory.mktemp("tpl") / "repo"))


@pytest.fixture
def two_versions(two_versions_template: Path, tmp_path: Path) -> Path:
    return copy_repo(two_versions_template, tmp_path / "repo")


def build_two_versions(repo: Path) -> Path:
    state = make_state(0, layers=2, width=96)
    save_safetensors(repo / MODEL, state)
    git(repo, "add", MODEL)
    git(repo, "commit", "-qm", "v1")
    save_safetensors(repo / MODEL, perturb(state, 1))
    git(repo, "add", MODEL)
    git(repo, "commit", "-qm", "v2")
    return repo


def head_pointer(repo: Path, rev: str = "HEAD") -> ptr.Pointer:
    return ptr.parse(git(repo, "show", f"{rev}:{MODEL}").encode())


def keyframe_with_dependent(repo: Path) -> tuple[str, str]:
    """A chunk of v1 (a keyframe) that v2's version of the same chunk is a delta against."""
    store = find_repo(repo).store
    for c in head_pointer(repo, "HEAD").chunk_ids():
        base = store.header(c).base
        if base is not None:
            return base, c
    raise AssertionError("expected v2 to be stored as deltas against v1")


def kinds(res) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for p in res.problems:
        out.setdefault(p.kind, set()).add(p.what)
    return out


def test_healthy_repository(two_versions: Path) -> None:
    proc = coral(two_versions, "fsck")
    assert proc.returncode == 0
    assert "ok" in proc.stderr.decode()


def test_flipped_byte_is_found_named_and_moved_aside(two_versions: Path) -> None:
    repo = two_versions
    victim, dependent = keyframe_with_dependent(repo)
    path = find_repo(repo).store.loose.path(victim)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40
    path.write_bytes(bytes(data))
    proc = coral(repo, "fsck", check=False)
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert f"corrupt {victim}" in out
    assert f"needed by {MODEL} (tensor " in out
    assert "lost-found" in out
    assert f"unreadable {dependent}: its delta base {victim} is corrupt" in out
    lost = repo / ".git" / "coral" / "lost-found" / victim
    assert lost.read_bytes() == bytes(data)  # set aside, not deleted
    assert not path.exists()
    res = fsck(find_repo(repo))  # now it is simply missing
    assert victim in kinds(res)["missing"]


def test_no_move_leaves_objects_in_place(two_versions: Path) -> None:
    repo = two_versions
    victim, _ = keyframe_with_dependent(repo)
    path = find_repo(repo).store.loose.path(victim)
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-3])
    res = fsck(find_repo(repo), move=False)
    assert victim in kinds(res)["corrupt"]
    assert path.exists()


def test_deleted_object_is_reported_with_files_and_revisions(two_versions: Path) -> None:
    repo = two_versions
    p = head_pointer(repo)
    victim = p.tensors[0].chunks[0]
    store = find_repo(repo).store
    if store.header(victim).base is None and any(store.header(c).base == victim for c in head_pointer(repo, "HEAD").chunk_ids()):
        victim = p.skeleton[0]
    store.loose.path(victim).unlink()
    res = fsck(find_repo(repo))
    assert res.errors
    missing = [x for x in res.problems if x.kind == "missing"]
    assert [x.what for x in missing] == [victim]
    head = git(repo, "rev-parse", "HEAD").strip()[:12]
    assert any(path == MODEL and rev.startswith(head) for rev, path, _ in missing[0].needed_by)
    proc = coral(repo, "fsck", check=False)
    assert proc.returncode == 1 and f"missing {victim}" in proc.stdout.decode()


def test_truncated_pack(two_versions: Path) -> None:
    repo = two_versions
    r = find_repo(repo)
    store = r.store
    with store.lock():
        packs.repack(store)
    (pack_path,) = (repo / ".git" / "coral" / "packs").glob("pack-*.pack")
    pack = packs.Pack(pack_path)
    entries = sorted(pack.iter_entries(), key=lambda e: e.offset)
    last = entries[-1]
    cut = last.offset + last.length // 2
    pack.close()
    os.chmod(pack_path, 0o644)
    with open(pack_path, "r+b") as f:
        f.truncate(cut)
    res = fsck(find_repo(repo))
    found = kinds(res)
    assert last.cid in found["corrupt"]
    assert any("truncated" in p.detail for p in res.problems if p.what == last.cid)
    assert (repo / ".git" / "coral" / "lost-found" / pack_path.name).exists()
    # the sound objects were salvaged into a new pack
    fresh = find_repo(repo).store
    first = entries[0]
    if first.cid not in found.get("unreadable", set()):
        assert fresh.get(first.cid).size > 0
    assert fresh.loose.ids() == [] and not fresh.has(last.cid)


def test_pack_cut_inside_its_index(two_versions: Path) -> None:
    repo = two_versions
    store = find_repo(repo).store
    with store.lock():
        packs.repack(store)
    (pack_path,) = (repo / ".git" / "coral" / "packs").glob("pack-*.pack")
    os.chmod(pack_path, 0o644)
    with open(pack_path, "r+b") as f:
        f.truncate(packs.HEADER.size + 100)
    res = fsck(find_repo(repo))
    found = kinds(res)
    assert pack_path.name in found["bad-pack"]
    assert found["missing"]  # every chunk it held is now missing, and said so
    assert (repo / ".git" / "coral" / "lost-found" / pack_path.name).exists()


def test_broken_pointer_is_reported(repo: Path) -> None:
    (repo / "notes.txt").write_text("coral-pointer 1\nfile 12 nonsense\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "a file that only looks like a pointer")
    res = fsck(find_repo(repo))
    broken = [p for p in res.problems if p.kind == "broken-pointer"]
    assert len(broken) == 1 and broken[0].needed_by[0][1] == "notes.txt"
    assert coral(repo, "fsck", check=False).returncode == 1


def test_cyclic_delta_chain(repo: Path) -> None:
    from coral_git.store.chunkstore import DELTA_CODEC
    from coral_git.store.objects import ObjectHeader

    store = find_repo(repo).store
    a, b = "aa" * 16, "bb" * 16
    store.loose.write(a, ObjectHeader(DELTA_CODEC, 4, 1, 8, b).pack() + b"x")
    store.loose.write(b, ObjectHeader(DELTA_CODEC, 4, 1, 8, a).pack() + b"y")
    res = fsck(find_repo(repo), move=False)
    cyc = {p.what for p in res.problems if p.kind == "unreadable" and "cyclic" in p.detail}
    assert cyc == {a, b}
    with pytest.raises(Exception, match="cyclic"):
        store.get(a)
