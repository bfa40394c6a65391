"""A path in one version of the work: a revision, the index (``""``) or the work tree (None).

The same spelling as :func:`coral_git.open`'s ``rev``. Reads go through the repository's long-lived
``git cat-file`` processes (:class:`~coral_git.git.repo.ObjectReader`): no subprocess per lookup, and
no pygit2 import in the filter process, which calls this for shard bases.
"""

from __future__ import annotations

import os

from .repo import Repo, run_git, tree_entries

Spec = str | None
WORKTREE = "worktree"  # the blob id this module gives a work-tree file


def _name(spec: str, path: str) -> str:
    """git's object name of ``path`` in the index (``:PATH``, stage 0) or at revision ``spec``."""
    return f":{path}" if spec == "" else f"{spec}:{path}"


def blob_at(r: Repo, spec: Spec, path: str) -> str | None:
    """The blob id of ``path`` at ``spec`` (:data:`WORKTREE` for a work-tree file), None if absent."""
    if spec is None:
        return WORKTREE if r.worktree is not None and (r.worktree / path).is_file() else None
    if not path or "\n" in path:
        return None
    head = r.objects.info([_name(spec, path)])[0]
    return head[0] if head is not None and head[1] == "blob" else None


def read_at(r: Repo, blob: str, path: str, limit: int) -> bytes | None:
    """The bytes of a blob (or of the work-tree file) from :func:`blob_at`, None past ``limit`` bytes."""
    if blob == WORKTREE:
        assert r.worktree is not None
        f = r.worktree / path
        return f.read_bytes() if f.stat().st_size <= limit else None
    found = r.objects.read(blob, limit)
    return found[1] if found is not None else None


def listdir_at(r: Repo, spec: Spec, d: str) -> list[str]:
    """File names in directory ``d`` (``""``: the top) at ``spec``."""
    if spec is None:
        try:
            return os.listdir(r.worktree / d) if r.worktree is not None else []
        except OSError:
            return []
    if spec == "":
        prefix = d + "/" if d else ""
        proc = run_git(["--literal-pathspecs", "ls-files", "-z", "--", prefix or "."], r.worktree or r.git_dir)
        names = proc.stdout.decode("utf-8", "surrogateescape").split("\0") if proc.returncode == 0 else []
        return [p[len(prefix) :] for p in names if p.startswith(prefix) and "/" not in p[len(prefix) :]]
    if "\n" in spec or "\n" in d:
        return []
    head = r.objects.info([f"{spec}:{d}" if d else f"{spec}^{{tree}}"])[0]
    if head is None or head[1] != "tree":
        return []
    data = r.objects.contents([head[0]])[0] or b""
    return [name for _, name, _ in tree_entries(data, len(head[0]))]
