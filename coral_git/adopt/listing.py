"""``git coral ls-files``: the coral files of the index or of a revision, and whether their chunks are local."""

from __future__ import annotations

from typing import Any

from ..git.pointers import pointer_blobs
from ..git.repo import Repo, git


def blobs_of(repo: Repo, rev: str | None) -> list[tuple[str, str]]:
    """``(blob id, path)`` of every file in the index (``rev`` None) or in ``rev``'s tree."""
    cwd = repo.worktree or repo.git_dir
    out: list[tuple[str, str]] = []
    if rev is None:
        for item in git("ls-files", "-s", "-z", cwd=cwd).split("\0"):
            if item:
                meta, _, path = item.partition("\t")
                out.append((meta.split()[1], path))
    else:
        for item in git("ls-tree", "-r", "-z", rev, cwd=cwd).split("\0"):
            if item:
                meta, _, path = item.partition("\t")
                _mode, kind, oid = meta.split()
                if kind == "blob":
                    out.append((oid, path))
    return out


def list_files(repo: Repo, rev: str | None) -> list[dict[str, Any]]:
    cwd = repo.worktree or repo.git_dir
    rows = []
    for path, p in pointer_blobs(cwd, blobs_of(repo, rev)):
        ids = p.chunk_ids()
        have = sum(1 for c in ids if repo.store.has(c))
        rows.append(
            {
                "path": path,
                "id": p.file_id,
                "size": p.size,
                "format": p.format,
                "tensors": len(p.tensors),
                "chunks": len(ids),
                "chunks_local": have,
                "present": have == len(ids),
            }
        )
    return sorted(rows, key=lambda r: r["path"])
