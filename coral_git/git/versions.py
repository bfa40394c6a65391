"""A path in one version of the work: a revision, the index (``""``) or the work tree (None).

The same spelling as :func:`coral_git.open`'s ``rev``. Reads go through pygit2 (no subprocess), so
looking up a handful of files per command stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .repo import Repo

if TYPE_CHECKING:  # pygit2 costs ~50-100 ms to import: the filter process loads this module but seldom calls it
    import pygit2

Spec = str | None
WORKTREE = "worktree"  # the blob id this module gives a work-tree file


def _tree(r: Repo, spec: str) -> pygit2.Tree:
    import pygit2

    return r.pygit.revparse_single(spec).peel(pygit2.Tree)


def blob_at(r: Repo, spec: Spec, path: str) -> str | None:
    """The blob id of ``path`` at ``spec`` (:data:`WORKTREE` for a work-tree file), None if absent."""
    if spec is None:
        return WORKTREE if r.worktree is not None and (r.worktree / path).is_file() else None
    import pygit2

    try:
        if spec == "":
            return str(r.pygit.index[path].id)
        return str(_tree(r, spec)[path].id)
    except (KeyError, ValueError, pygit2.GitError):
        return None


def read_at(r: Repo, blob: str, path: str, limit: int) -> bytes | None:
    """The bytes of a blob (or of the work-tree file) from :func:`blob_at`, None past ``limit`` bytes."""
    if blob == WORKTREE:
        assert r.worktree is not None
        f = r.worktree / path
        return f.read_bytes() if f.stat().st_size <= limit else None
    obj = r.pygit[blob]
    return obj.data if obj.size <= limit else None


def listdir_at(r: Repo, spec: Spec, d: str) -> list[str]:
    """File names in directory ``d`` (``""``: the top) at ``spec``."""
    if spec is None:
        try:
            return os.listdir(r.worktree / d) if r.worktree is not None else []
        except OSError:
            return []
    import pygit2

    try:
        if spec == "":
            prefix = d + "/" if d else ""
            return [e.path[len(prefix) :] for e in r.pygit.index if e.path.startswith(prefix) and "/" not in e.path[len(prefix) :]]
        tree = _tree(r, spec)
        if d:
            tree = r.pygit[tree[d].id]
        return [e.name for e in tree]
    except (KeyError, ValueError, pygit2.GitError):
        return []
