"""Pointer scanning: which coral pointers a set of blobs, a tree or a range of history holds.

One home for "git objects → pointers" (fetch, pull, ls-files, direct checkout use it); objects are read
in batches through ``git cat-file`` so a scan of a large history costs two git processes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..core import pointer as ptr
from ..errors import CoralError
from .repo import run_git


def _git(args: list[str], cwd: Path, input: bytes | None = None) -> bytes:
    proc = run_git(args, cwd, input)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise CoralError(f"git {args[0]} failed: {msg[-1] if msg else proc.returncode}")
    return proc.stdout


def pointer_blobs(cwd: Path, blobs: Iterable[tuple[str, str]]) -> Iterator[tuple[str, ptr.Pointer]]:
    """``(path, pointer)`` for each ``(blob id, path)`` whose blob is a coral pointer."""
    blobs = list(blobs)
    if not blobs:
        return
    check = _git(["cat-file", "--batch-check=%(objectname) %(objecttype) %(objectsize)"], cwd,
                 "".join(f"{b}\n" for b, _ in blobs).encode())
    small: list[tuple[str, str]] = []
    for (oid, path), line in zip(blobs, check.decode().splitlines(), strict=True):
        parts = line.split()
        if len(parts) == 3 and parts[1] == "blob" and len(ptr.MAGIC) <= int(parts[2]) <= ptr.MAX_POINTER:
            small.append((oid, path))
    if not small:
        return
    out = _git(["cat-file", "--batch"], cwd, "".join(f"{b}\n" for b, _ in small).encode())
    pos = 0
    for _oid, path in small:
        nl = out.index(b"\n", pos)
        size = int(out[pos:nl].split()[2])
        data = out[nl + 1 : nl + 1 + size]
        pos = nl + 1 + size + 1
        p = ptr.try_parse(data)
        if p is not None:
            yield path, p


def tree_pointers(cwd: Path, rev: str, include: list[str] | None = None) -> Iterator[tuple[str, ptr.Pointer]]:
    """Pointers in the tree of ``rev`` whose path matches one of ``include`` (all when empty)."""
    out = _git(["ls-tree", "-r", "-z", rev], cwd)
    blobs = []
    for item in out.decode(errors="surrogateescape").split("\0"):
        if not item:
            continue
        meta, _, path = item.partition("\t")
        _mode, kind, oid = meta.split()
        if kind == "blob" and (not include or any(fnmatch.fnmatch(path, g) for g in include)):
            blobs.append((oid, path))
    yield from pointer_blobs(cwd, blobs)


def history_pointers(cwd: Path, rev_args: list[str]) -> Iterator[tuple[str, ptr.Pointer]]:
    """Pointers in every commit that ``git rev-list rev_args`` lists (only objects new to that range)."""
    out = _git(["rev-list", "--objects", *rev_args], cwd)
    blobs = []
    for line in out.decode(errors="surrogateescape").splitlines():
        oid, _, path = line.partition(" ")
        if path:
            blobs.append((oid, path))
    yield from pointer_blobs(cwd, blobs)


Position = tuple[str, str | None, int]


def position_groups(pointers: Iterable[tuple[str, ptr.Pointer]]) -> list[list[str]]:
    """Chunk ids per chunk position, in the order ``pointers`` come (give them newest first).

    A position is ``(path, tensor name, chunk index)`` (``(path, None, index)`` for a fixed-grid
    skeleton chunk): the versions of one chunk, what delta bases are chosen among (the repacker and
    the push). Content-defined skeleton chunks have no stable position and are left out. Ids may
    repeat across positions.
    """
    groups: dict[Position, dict[str, None]] = {}
    for path, p in pointers:
        if p.cdc is None:
            for i, c in enumerate(p.skeleton):
                groups.setdefault((path, None, i), {}).setdefault(c)
        for t in p.tensors:
            for i, c in enumerate(t.chunks):
                groups.setdefault((path, t.name, i), {}).setdefault(c)
    return [list(g) for g in groups.values()]
