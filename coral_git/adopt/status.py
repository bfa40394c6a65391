"""``git coral status``: model files staged and changed, and what the remote's chunk store still lacks."""

from __future__ import annotations

import os
from typing import Any

from ..core import pointer as ptr
from ..errors import CoralError
from ..git.repo import Repo, git

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_NAMES = {"A": "added", "M": "modified", "D": "deleted", "R": "renamed", "C": "copied", "T": "typechange", "U": "unmerged"}


def coral_paths(cwd, paths: list[str]) -> set[str]:
    """The paths whose ``filter`` attribute is coral."""
    if not paths:
        return set()
    out = git("check-attr", "-z", "--stdin", "filter", cwd=cwd, input="\0".join(paths).encode() + b"\0")
    parts = out.split("\0")
    return {parts[i] for i in range(0, len(parts) - 2, 3) if parts[i + 2] == "coral"}


def _name_status(cwd, *args: str) -> list[dict[str, str]]:
    out = git("diff", "--name-status", "-z", "--no-renames", *args, cwd=cwd)
    items = [x for x in out.split("\0")]
    rows = []
    for i in range(0, len(items) - 1, 2):
        if items[i]:
            rows.append({"status": _NAMES.get(items[i][0], items[i]), "path": items[i + 1]})
    keep = coral_paths(cwd, [r["path"] for r in rows])
    return [r for r in rows if r["path"] in keep]


def push_state(repo: Repo, remote: str | None) -> dict[str, Any]:
    from ..remote.backends import default_remote, resolve
    from ..remote.push import needed_chunks

    cwd = repo.worktree or repo.git_dir
    name = remote or default_remote(repo, "coral.pushRemote")
    if not name:
        return {"remote": None, "error": "no remote configured"}
    try:
        store = resolve(repo, name)
        ids, where = needed_chunks(cwd, ["HEAD"])
        have = store.has_many(ids)
    except CoralError as exc:
        return {"remote": name, "error": str(exc)}
    missing = [c for c in ids if c not in have]
    size = 0
    for c in missing:
        try:
            size += os.path.getsize(repo.store.loose.path(c))
        except OSError:
            data = repo.store.read_object_local(c)
            size += len(data) if data is not None else 0
    return {
        "remote": name,
        "store": store.describe(),
        "needed_chunks": len(ids),
        "missing_chunks": len(missing),
        "missing_bytes": size,
        "files": sorted({where[c] for c in missing}),
        "missing": missing,
    }


def worktree_pointers(repo: Repo) -> list[str]:
    if repo.worktree is None:
        return []
    paths = [p for p in git("ls-files", "-z", cwd=repo.worktree).split("\0") if p]
    left = []
    for p in sorted(coral_paths(repo.worktree, paths)):
        try:
            with open(repo.worktree / p, "rb") as f:
                if f.read(len(ptr.MAGIC_BYTES)) == ptr.MAGIC_BYTES:
                    left.append(p)
        except OSError:
            continue
    return left


def repo_status(repo: Repo, remote: str | None = None) -> dict[str, Any]:
    cwd = repo.worktree or repo.git_dir
    has_head = bool(git("rev-parse", "--verify", "--quiet", "HEAD", cwd=cwd, check=False))
    branch = git("symbolic-ref", "-q", "--short", "HEAD", cwd=cwd, check=False) or None
    staged = _name_status(cwd, "--cached", "HEAD" if has_head else EMPTY_TREE)
    unstaged = _name_status(cwd) if repo.worktree is not None else []
    push = push_state(repo, remote) if has_head else {"remote": None, "error": "no commit yet"}
    push.pop("missing", None)
    return {"branch": branch, "staged": staged, "unstaged": unstaged, "push": push, "pointers_in_worktree": worktree_pointers(repo)}
