"""Stored objects: a 32-byte header and an encoded payload, kept as loose files, written atomically.

Header (little-endian): magic ``CRLO``, version (1 byte, =1), codec code (1), itemsize (1),
run (1: the longest delta chain that ends at this object, capped at 255), raw length (u64),
base chunk id (16 bytes, all zero for a keyframe).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CorruptObjectError, StoreError

if TYPE_CHECKING:
    import numpy as np

MAGIC = b"CRLO"
HEADER = struct.Struct("<4sBBBBQ16s")
HEADER_SIZE = HEADER.size
NO_BASE = bytes(16)
MAX_RAW = 1 << 32


@dataclass(frozen=True, slots=True)
class ObjectHeader:
    """What an object says about itself before its payload is decoded."""

    codec: int
    itemsize: int
    run: int
    raw_len: int
    base: str | None

    def pack(self) -> bytes:
        base = bytes.fromhex(self.base) if self.base else NO_BASE
        return HEADER.pack(MAGIC, 1, self.codec, self.itemsize, min(self.run, 255), self.raw_len, base)


def unpack_header(cid: str, data: bytes) -> ObjectHeader:
    """Parse and sanity-check an object header; CorruptObjectError if it is not one."""
    if len(data) < HEADER_SIZE:
        raise CorruptObjectError(cid, "object is truncated")
    magic, version, codec, itemsize, run, raw_len, base = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != 1:
        raise CorruptObjectError(cid, "bad object header")
    if raw_len > MAX_RAW:
        raise CorruptObjectError(cid, f"header claims {raw_len} bytes")
    return ObjectHeader(codec, itemsize, run, raw_len, base.hex() if base != NO_BASE else None)


class LooseObjects:
    """One file per object under ``objects/ab/cdef…``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, cid: str) -> Path:
        return self.root / cid[:2] / cid[2:]

    def has(self, cid: str) -> bool:
        return os.path.exists(self.path(cid))

    def read(self, cid: str) -> bytes | None:
        try:
            with open(self.path(cid), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def read_into(self, cid: str, buffer: Callable[[int], np.ndarray]) -> memoryview | None:
        """The stored bytes of ``cid`` read into ``buffer(size)`` (a reused buffer: no allocation)."""
        try:
            fd = os.open(f"{self.root}/{cid[:2]}/{cid[2:]}", os.O_RDONLY)  # self.path(), without pathlib's cost
        except FileNotFoundError:
            return None
        try:
            n = os.fstat(fd).st_size
            mv = memoryview(buffer(n))
            got = 0
            while got < n:
                k = os.readv(fd, [mv[got:]])
                if k == 0:
                    break  # cut short under us: the header/decode checks name it
                got += k
            return mv[:got]
        finally:
            os.close(fd)

    def read_header(self, cid: str) -> bytes | None:
        try:
            with open(self.path(cid), "rb") as f:
                return f.read(HEADER_SIZE)
        except FileNotFoundError:
            return None

    def write(self, cid: str, data: bytes, writeback: bool = False) -> None:
        """Write atomically: a temp file in the same directory, then rename over the final name.

        ``writeback``: start writing the file's pages to disk now (the caller will fsync it soon), so
        the flush before git records a pointer overlaps the encoding of the chunks after it."""
        final = self.path(cid)
        write_atomic(final, data, writeback)

    def ids(self) -> list[str]:
        """Every loose object id (for gc, fsck, stats and push)."""
        out: list[str] = []
        if not self.root.is_dir():
            return out
        for d in sorted(self.root.iterdir()):
            if len(d.name) != 2 or not d.is_dir():
                continue
            out.extend(d.name + f.name for f in d.iterdir() if len(f.name) == 30 and not f.name.startswith("."))
        return out


_SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of the dirty pages, do not wait
_sync_file_range: Any = None  # libc's sync_file_range once looked up; False where there is none


def start_writeback(fd: int, offset: int = 0, nbytes: int = 0) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now (Linux ``sync_file_range``; of
    ``nbytes`` from ``offset``, 0: to the end); a hint only: a later fsync/syncfs still makes them
    durable, it just finds less left to do."""
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            fn = ctypes.CDLL(None, use_errno=True).sync_file_range
            fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            _sync_file_range = fn
        except (OSError, AttributeError):
            _sync_file_range = False
    if _sync_file_range:
        _sync_file_range(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE)


def write_atomic(final: Path, data: bytes | memoryview, writeback: bool = False) -> None:
    """Write ``data`` to ``final`` so that readers see either nothing or the whole file
    (``writeback``: start flushing it to disk at once, see :func:`start_writeback`).

    An OSError (disk full, read-only store, permissions) becomes a one-line StoreError.
    """
    try:
        tmp = final.parent / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileNotFoundError:  # the first object in its directory
            final.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except OSError as exc:
        raise StoreError(f"cannot write to {final.parent}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb", buffering=0) as f:
            view = memoryview(data)
            while view:
                view = view[f.write(view) :]
            if writeback:
                start_writeback(fd)
        os.replace(tmp, final)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write to {final.parent}: {exc.strerror or exc}") from exc
        raise
