"""The pack file format's constants and index (docs/format.md): shared by the pack reader and
gc's writer (packs.py) and the writer of an add's pack (addpack.py)."""

from __future__ import annotations

import itertools
import os
import struct
from pathlib import Path

import xxhash

from ..errors import StoreError

MAGIC = b"CRPK"
VERSION = 1  # written by gc/repack/push: index before the objects
VERSION_ADD = 2  # written by adds: objects first, index after them
HEADER = struct.Struct("<4sIQQ16s24x")
FANOUT_SIZE = 256 * 4
ENTRY = struct.Struct("<16sQQqQ")  # id, offset, length, mtime, xxh3-64 (ids compare as raw bytes)
SUFFIX = ".pack"


def index_of(table: list[tuple[bytes, int, int, int, int]]) -> tuple[bytes, bytes]:
    """``(fanout + entries, its xxh3-128)`` for ``(id, offset, length, mtime, checksum)`` rows (sorted here)."""
    table.sort(key=lambda e: e[0])
    if any(a[0] == b[0] for a, b in itertools.pairwise(table)):
        raise StoreError("internal error: an object was given twice to one pack")
    counts = [0] * 256
    for e in table:
        counts[e[0][0]] += 1
    fanout = list(itertools.accumulate(counts))
    index = struct.pack("<256I", *fanout) + b"".join(ENTRY.pack(*e) for e in table)
    return index, xxhash.xxh3_128_digest(index)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def add_packs(packs_dir: Path) -> list[tuple[Path, int, int]]:
    """``(path, objects, bytes)`` of every pack an add wrote (version 2), from their headers only: the
    objects adds wrote since the last gc, which counts them like loose ones (it folds them into its
    packs). Cheap enough for the check after every add (one 64-byte read per pack)."""
    out: list[tuple[Path, int, int]] = []
    try:
        names = [e for e in os.scandir(packs_dir) if e.name.endswith(SUFFIX) and not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return out
    for e in names:
        try:
            with open(e.path, "rb") as f:
                head = f.read(HEADER.size)
                size = os.fstat(f.fileno()).st_size
        except OSError:
            continue
        if len(head) == HEADER.size:
            magic, version, count, _, _ = HEADER.unpack(head)
            if magic == MAGIC and version == VERSION_ADD:
                out.append((Path(e.path), count, size))
    return out
