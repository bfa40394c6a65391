"""The bytes of merged tensors: read stored tensors, combine them block by block, splice them into a skeleton."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from ..core.pointer import Pointer, TensorEntry
from ..dtypes import itemsize
from ..errors import MergeError
from ..filter.smudge import decoded_chunks
from ..store.chunkstore import ChunkStore
from .model import Decision
from .strategies import compute_dtype, from_float, to_float

DECODE_WORKERS = 2  # chunks decoded ahead on a small pool (2 × workers in flight per tensor)


def _decoded(store: ChunkStore, e: TensorEntry, context: str) -> Iterator[np.ndarray]:
    return decoded_chunks(store, [(c, f"tensor {e.name}") for c in e.chunks], context, DECODE_WORKERS)


class TensorReader:
    """Sequential reads of one stored tensor's bytes, decoding a few chunks ahead."""

    def __init__(self, store: ChunkStore, entry: TensorEntry, context: str) -> None:
        self._chunks = _decoded(store, entry, context)
        self._context = context
        self._buf = np.empty(0, dtype=np.uint8)

    def read(self, n: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        while n:
            if self._buf.size == 0:
                chunk = next(self._chunks, None)
                if chunk is None:
                    raise MergeError(f"{self._context}: tensor data ends early")
                self._buf = chunk
            take = min(n, self._buf.size)
            parts.append(self._buf[:take])
            self._buf = self._buf[take:]
            n -= take
        if not parts:
            return np.empty(0, dtype=np.uint8)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def entry_pieces(store: ChunkStore, e: TensorEntry, context: str) -> Iterator[np.ndarray]:
    """The raw bytes of a stored tensor, chunk by chunk."""
    return _decoded(store, e, context)


def combined_pieces(store: ChunkStore, d: Decision, context: str, block_bytes: int) -> Iterator[np.ndarray]:
    """The raw bytes of a combined tensor, computed block by block in float32/float64."""
    assert d.strategy is not None and d.ours is not None and d.theirs is not None
    dtype, nbytes = d.ours.dtype, d.ours.nbytes
    size = itemsize(dtype)
    block = max(size, block_bytes // size * size)

    def blocks() -> Iterator[tuple[np.ndarray | None, np.ndarray, np.ndarray]]:
        use_base = d.base is not None and d.strategy is not None and d.strategy.needs_base
        rb = TensorReader(store, d.base, context) if use_base and d.base is not None else None
        ro, rt = TensorReader(store, d.ours, context), TensorReader(store, d.theirs, context)  # type: ignore[arg-type]
        for start in range(0, nbytes, block):
            n = min(block, nbytes - start)
            b = to_float(rb.read(n), dtype) if rb is not None else None
            yield b, to_float(ro.read(n), dtype), to_float(rt.read(n), dtype)

    d.strategy.prepare(blocks, nbytes // size)
    cdt = compute_dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for b, o, t in blocks():
            out = d.strategy.combine(b, o, t).astype(cdt, copy=False)
            yield from_float(out, dtype)


def pieces(store: ChunkStore, d: Decision, context: str, block_bytes: int) -> Iterator[np.ndarray]:
    """The merged bytes of one tensor."""
    if d.take is not None:
        return entry_pieces(store, d.take, context)
    return combined_pieces(store, d, context, block_bytes)


def read_skeleton(store: ChunkStore, p: Pointer, context: str) -> bytes:
    """The skeleton bytes of a pointer's file (every byte outside tensor spans)."""
    return b"".join(store.get(c, f"{context}: skeleton").tobytes() for c in p.skeleton)


def splice(
    skel: bytes,
    layout: Pointer,
    decisions: list[Decision],
    store: ChunkStore,
    out: BinaryIO,
    path: str,
    block_bytes: int,
    crc: bool = False,
) -> list[int]:
    """Write ``layout``'s skeleton with each tensor's bytes replaced by its decision's bytes.

    Every decision must have the entry's byte size. With ``crc``, returns the CRC-32 of each
    tensor's new bytes (computed while writing), in ``layout`` order.
    """
    pos = 0  # file position
    spos = 0  # skeleton position
    sums: list[int] = []
    for e, d in zip(layout.tensors, decisions, strict=True):
        gap = e.offset - pos
        out.write(skel[spos : spos + gap])
        spos += gap
        value = 0
        got = 0
        for piece in pieces(store, d, path, block_bytes):
            mv = memoryview(piece)
            out.write(mv)
            if crc:
                value = zlib.crc32(mv, value)
            got += piece.size
        if got != e.nbytes:
            raise MergeError(f"{path}: tensor {d.name}: merged data has {got} bytes, expected {e.nbytes}")
        sums.append(value)
        pos = e.end
    out.write(skel[spos:])
    return sums
