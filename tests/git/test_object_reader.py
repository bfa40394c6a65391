"""Reads through git cat-file (git/repo.ObjectReader) give what the pygit2 reads they replaced gave."""

from __future__ import annotations

from pathlib import Path

import pygit2
from helpers import git, make_state, save_safetensors

from coral_git.core import pointer as ptr
from coral_git.git.repo import find_repo
from coral_git.git.tracked import TrackedTensors
from coral_git.git.versions import blob_at, listdir_at, read_at


def pygit2_table(repo: Path, max_blobs: int) -> dict:
    """The candidate table as the pygit2 walk built it (index entries, then HEAD's tree depth first)."""
    r = pygit2.Repository(str(repo))
    oids = [e.id for n, e in zip(range(max_blobs), r.index, strict=False)]
    stack, n = [r.revparse_single("HEAD").peel(pygit2.Tree)], 0
    while stack and n <= max_blobs:
        for e in stack.pop():
            if e.type == pygit2.enums.ObjectType.BLOB:
                n += 1
                if n > max_blobs:
                    break
                oids.append(e.id)
            elif e.type == pygit2.enums.ObjectType.TREE:
                stack.append(r[e.id])
    table: dict = {}
    for oid in dict.fromkeys(oids):
        p = ptr.try_parse(r[oid].data) if ptr.looks_like_pointer(r[oid].data) else None
        for t in p.tensors if p is not None else ():
            versions = table.setdefault((t.name, t.dtype, tuple(t.shape), p.chunk_bytes), [])
            if t.chunks not in versions:
                versions.append(tuple(t.chunks))
    return table


def test_tracked_tensors_and_versions_match_pygit2(repo: Path) -> None:
    for i, rel in enumerate(["a.safetensors", "d/b.safetensors", "d/e/c.safetensors", "z/f.safetensors", "d/x y.safetensors"]):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(repo / rel, make_state(i % 3, layers=1, width=32))
    (repo / "d" / "notes.txt").write_text("not a pointer\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    save_safetensors(repo / "d" / "e" / "c.safetensors", make_state(7, layers=1, width=32))
    save_safetensors(repo / "new.safetensors", make_state(8, layers=1, width=32))
    git(repo, "add", ".")  # the index differs from HEAD
    r = find_repo(repo)
    for limit in (2048, 3, 7):
        got = TrackedTensors(r.objects, max_blobs=limit)._scan()
        assert got == pygit2_table(repo, limit)
        assert any(len(v) > 1 for v in got.values())  # several versions of one tensor, in order
    pg = pygit2.Repository(str(repo))
    head = pg.revparse_single("HEAD").peel(pygit2.Tree)
    for spec in ("", "HEAD"):
        for path in ("d/x y.safetensors", "d/e/c.safetensors", "nope", "new.safetensors"):
            want = pg.index[path].id if spec == "" and path in pg.index else None
            if spec == "HEAD":
                try:
                    want = head[path].id
                except KeyError:
                    want = None
            assert blob_at(r, spec, path) == (str(want) if want else None)
            if want:
                assert read_at(r, str(want), path, 1 << 20) == pg[want].data
    assert sorted(listdir_at(r, "HEAD", "d")) == sorted(e.name for e in pg[head["d"].id])
    assert sorted(listdir_at(r, "HEAD", "")) == sorted(e.name for e in head)
    index_d = sorted(e.path[2:] for e in pg.index if e.path.startswith("d/") and "/" not in e.path[2:])
    assert sorted(listdir_at(r, "", "d")) == index_d == ["b.safetensors", "notes.txt", "x y.safetensors"]
    assert listdir_at(r, "HEAD", "nope") == [] and listdir_at(r, "HEAD", "a.safetensors") == []
    r.objects.close()
