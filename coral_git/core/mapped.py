"""A file read through mmap without letting it pile up in the process's resident memory.

Format readers get a zero-copy view for headers; tensor chunks are copied out one range at a time and
the pages they came from are released again (MADV_DONTNEED), so a multi-GB input costs chunk-sized
memory, not file-sized resident memory.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

_PAGE = mmap.PAGESIZE


class MappedFile:
    """Read-only mapping of an open file descriptor."""

    def __init__(self, fd: int) -> None:
        self.size = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, 0, access=mmap.ACCESS_READ) if self.size else None

    def view(self) -> memoryview | bytes:
        """Zero-copy view of the whole file (for reading headers and small structures)."""
        return memoryview(self._map) if self._map is not None else b""

    def read(self, start: int, end: int) -> np.ndarray:
        """A private copy of bytes ``[start, end)``; their pages are dropped from resident memory."""
        if self._map is None or end <= start:
            return np.empty(0, dtype=np.uint8)
        out = np.frombuffer(self._map, dtype=np.uint8, count=end - start, offset=start).copy()
        self.release(start, end)
        return out

    def release(self, start: int, end: int) -> None:
        """Drop the pages of ``[start, end)`` from this process (the page cache keeps them)."""
        if self._map is None:
            return
        lo = start - start % _PAGE
        hi = min(self.size, end)
        if hi > lo:
            try:
                self._map.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
            except (OSError, ValueError, AttributeError):
                pass  # an optimisation only

    def close(self) -> None:
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # a view still exists; the mapping goes with its last reference


@contextmanager
def mapped_array(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """A file's bytes as a read-only uint8 array backed by mmap (empty files give an empty array)."""
    with open(path, "rb") as f:
        m = MappedFile(f.fileno())
    try:
        yield np.frombuffer(m.view(), dtype=np.uint8)
    finally:
        m.close()  # a view still alive keeps the mapping until it goes
