"""Sharded checkpoints (``*.index.json`` + shard files) as one model in the Python API and ``git coral``.

A *spec* names one version of the work: a revision, ``""`` for the index, None for the work tree
(as :func:`coral_git.open`). The shard sides are built by a callback from ``api.model`` (pointer from
the blob, or the work-tree file hashed in memory), so this module needs nothing from it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from contextlib import ExitStack

from ..diffs.sharded import join
from ..diffs.tensordiff import FileDiff, Side, diff_files
from ..formats.shardindex import MAX_INDEX_BYTES, is_index_path, shard_paths, weight_map
from ..git.repo import Repo
from ..git.versions import Spec, blob_at, listdir_at, read_at

SideFn = Callable[[ExitStack, str, "str | None"], Side]  # (stack, path, blob id | "worktree" | None) → side


def model_side(
    r: Repo, stack: ExitStack, spec: Spec, index_path: str, side_fn: SideFn, same: tuple[Spec, set[str]] | None = None
) -> tuple[Side, list[str]] | None:
    """The model an index names at ``spec`` as one side, and its shard paths.

    ``(Side(None, None), [])`` when the index does not exist there; None when it is not a shard index
    or its shards cannot be read as one model (then the files are diffed one by one). ``same`` =
    ``(other spec, changed paths)``: a shard not among the changed paths is read at the other spec
    (its pointer), so unchanged work-tree shards are not hashed.
    """

    def shard_blob(p: str) -> str | None:
        if same is not None and p not in same[1]:
            blob = blob_at(r, same[0], p)
            if blob is not None:  # tracked and unchanged (an untracked shard is not in git's list)
                return blob
        return blob_at(r, spec, p)

    blob = blob_at(r, spec, index_path)
    if blob is None:
        return Side(None, None), []
    data = read_at(r, blob, index_path, MAX_INDEX_BYTES)
    wm = weight_map(data) if data is not None else None
    if wm is None:
        return None
    paths = shard_paths(index_path, wm)
    joined = join([(p, side_fn(stack, p, shard_blob(p))) for p in paths], wm)
    return None if joined is None else (joined, paths)


def candidate_indexes(r: Repo, changed: Iterable[str], specs: Iterable[Spec]) -> list[str]:
    """Index files that are changed, or sit beside a changed file at one of ``specs``."""
    changed = list(changed)
    out = {p for p in changed if is_index_path(p)}
    specs = list(specs)
    for d in {posixpath.dirname(p) for p in changed}:
        for spec in specs:
            out.update(posixpath.join(d, n) for n in listdir_at(r, spec, d) if is_index_path(n))
    return sorted(out)


def diff_models(
    r: Repo, changed: list[str], old: Spec, new: Spec, side_fn: SideFn, **kw: object
) -> tuple[list[FileDiff], set[str]]:
    """One diff per sharded model touched by ``changed``, and the shard paths those diffs cover."""
    fds: list[FileDiff] = []
    covered: set[str] = set()
    touched = set(changed)
    for ip in candidate_indexes(r, changed, (old, new)):
        with ExitStack() as stack:
            a = model_side(r, stack, old, ip, side_fn)
            b = model_side(r, stack, new, ip, side_fn, (old, touched) if new is None else None)
            if a is None or b is None:
                continue
            paths = set(a[1]) | set(b[1])
            if not (paths | {ip}) & touched:
                continue
            covered |= paths
            fds.append(diff_files(ip, a[0], b[0], workers=r.workers, **kw))  # type: ignore[arg-type]
    return fds, covered


def same_model(a: Side, b: Side) -> bool:
    """True when two sides hold the same tensors (by chunk ids) and the same shard headers."""
    pa, pb = a.pointer, b.pointer
    if pa is None or pb is None:
        return pa is pb
    return (pa.format, pa.skeleton, pa.tensors) == (pb.format, pb.skeleton, pb.tensors)
