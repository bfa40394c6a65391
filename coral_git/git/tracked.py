"""Tensor versions other paths hold: delta base candidates for a file added at a new path.

Read once per filter session, only when a tensor needs candidates: the pointers staged in the index,
committed in ``HEAD`` (the new commit's first parent) and, during a merge, in ``MERGE_HEAD``. The scan
is bounded (``MAX_BLOBS`` blob headers per source): a work tree of many thousands of files costs a
fixed, small time and may simply offer fewer candidates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..core import pointer as ptr

MAX_BLOBS = 2048
Signature = tuple[str, str, tuple[int, ...], int]  # tensor name, dtype, shape, chunk size


class TrackedTensors:
    """``signature → chunk id tuples`` of the tensors in pointers the index and parents hold."""

    def __init__(self, pygit: Any, max_blobs: int = MAX_BLOBS) -> None:
        self.pygit = pygit
        self.max_blobs = max_blobs
        self._table: dict[Signature, list[tuple[str, ...]]] | None = None

    def __call__(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[tuple[str, ...]]:
        if self._table is None:
            try:
                self._table = self._scan()
            except Exception:  # a candidate list is a hint: an unreadable index or HEAD offers none
                self._table = {}
        return self._table.get((name, dtype, tuple(shape), chunk_bytes), [])

    def _scan(self) -> dict[Signature, list[tuple[str, ...]]]:
        table: dict[Signature, list[tuple[str, ...]]] = {}
        seen: set[Any] = set()
        for oid in self._blob_ids():
            if oid in seen:
                continue
            seen.add(oid)
            p = self._pointer(oid)
            if p is None:
                continue
            for t in p.tensors:
                versions = table.setdefault((t.name, t.dtype, tuple(t.shape), p.chunk_bytes), [])
                if t.chunks not in versions:
                    versions.append(tuple(t.chunks))
        return table

    def _blob_ids(self) -> Iterator[Any]:
        r = self.pygit
        for n, entry in enumerate(r.index):
            if n >= self.max_blobs:
                break
            yield entry.id
        for ref in ("HEAD", "MERGE_HEAD"):
            try:
                obj = r.revparse_single(ref).peel(None)
            except Exception:  # no HEAD yet, no merge in progress
                continue
            yield from _tree_blobs(r, obj.tree if hasattr(obj, "tree") else obj, self.max_blobs)

    def _pointer(self, oid: Any) -> ptr.Pointer | None:
        try:
            _, size = self.pygit.odb.read_header(oid)
            if size > ptr.MAX_POINTER:
                return None
            data = self.pygit[oid].data
        except Exception:
            return None
        if not ptr.looks_like_pointer(data):
            return None
        return ptr.try_parse(data)


def _tree_blobs(r: Any, tree: Any, limit: int) -> Iterator[Any]:
    """Blob ids in ``tree`` (recursively), at most ``limit``."""
    import pygit2

    stack, n = [tree], 0
    while stack:
        for e in stack.pop():
            if e.type == pygit2.enums.ObjectType.BLOB:
                n += 1
                if n > limit:
                    return
                yield e.id
            elif e.type == pygit2.enums.ObjectType.TREE:
                stack.append(r[e.id])
