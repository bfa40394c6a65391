"""Tensor versions other paths hold: delta base candidates for a file added at a new path.

Read once per filter session, only when a tensor needs candidates: the pointers staged in the index,
committed in ``HEAD`` (the new commit's first parent) and, during a merge, in ``MERGE_HEAD``. The scan
is bounded (``MAX_BLOBS`` blob headers per source): a work tree of many thousands of files costs a
fixed, small time and may simply offer fewer candidates. Objects are read through git
(:class:`~coral_git.git.repo.ObjectReader`), never pygit2: this runs inside the filter process.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..core import pointer as ptr
from .repo import ObjectReader, run_git, tree_entries

MAX_BLOBS = 2048
Signature = tuple[str, str, tuple[int, ...], int]  # tensor name, dtype, shape, chunk size
_TREE, _COMMIT = "40000", "160000"  # tree entry modes; every other mode is a blob


class TrackedTensors:
    """``signature → chunk id tuples`` of the tensors in pointers the index and parents hold."""

    def __init__(self, objects: ObjectReader, max_blobs: int = MAX_BLOBS) -> None:
        self.objects = objects
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
        oids: list[str] = []
        seen: set[str] = set()
        for oid in self._blob_ids():
            if oid not in seen:
                seen.add(oid)
                oids.append(oid)
        heads = self.objects.info(oids)
        small = [h[0] for h in heads if h is not None and h[1] == "blob" and h[2] <= ptr.MAX_POINTER]
        for data in self.objects.contents(small):
            p = _pointer(data)
            for t in p.tensors if p is not None else ():
                versions = table.setdefault((t.name, t.dtype, tuple(t.shape), p.chunk_bytes), [])  # type: ignore[union-attr]
                if t.chunks not in versions:
                    versions.append(tuple(t.chunks))
        return table

    def _blob_ids(self) -> Iterator[str]:
        """The index's entries (in its order, every stage), then the blobs of HEAD's and MERGE_HEAD's trees."""
        cwd = self.objects.cwd
        proc = run_git(["ls-files", "-s", "-z"], cwd)
        if proc.returncode == 0:
            for n, rec in enumerate(r for r in proc.stdout.split(b"\0") if r):
                if n >= self.max_blobs:
                    break
                yield rec.split(b" ", 2)[1].decode()  # "mode oid stage\tpath"
        for ref in ("HEAD", "MERGE_HEAD"):
            root = self.objects.info([f"{ref}^{{tree}}"])[0]
            if root is not None:  # no HEAD yet, no merge in progress
                yield from self._tree_blobs(root[0])

    def _tree_blobs(self, root: str) -> Iterator[str]:
        """Blob ids under tree ``root``, at most ``max_blobs``: depth first, a tree's own blobs before
        its subtrees, the last subtree first (the order of the pygit2 walk this replaces: the order
        candidates are offered in)."""
        stack, n = [root], 0
        while stack:
            data = self.objects.contents([stack.pop()])[0]
            for mode, _, oid in tree_entries(data or b"", len(root)):
                if mode == _TREE:
                    stack.append(oid)
                elif mode != _COMMIT:
                    n += 1
                    if n > self.max_blobs:
                        return
                    yield oid


def _pointer(data: bytes | None) -> ptr.Pointer | None:
    if data is None or not ptr.looks_like_pointer(data):
        return None
    return ptr.try_parse(data)
