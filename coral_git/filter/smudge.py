"""smudge: pointer → the exact original bytes, streamed in file order with bounded memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import xxhash

from ..core.pointer import Pointer
from ..errors import CorruptObjectError, MissingObjectError
from ..store.chunkstore import ChunkStore

Write = Callable[[memoryview], None]


def chunk_order(p: Pointer) -> list[tuple[str, str]]:
    """Every chunk the file needs, as ``(id, what it belongs to)``, in the order they are written."""
    out: list[tuple[str, str]] = []
    skel_next = 0
    skel_pos = 0  # skeleton bytes already placed
    file_pos = 0

    def skeleton_upto(n_bytes: int) -> None:
        nonlocal skel_next
        # make sure every skeleton chunk overlapping [0, n_bytes) is queued
        # (content-defined skeleton cuts have no fixed size: only files without tensors use them)
        while skel_next < len(p.skeleton) and (skel_next * p.chunk_bytes < n_bytes or p.cdc is not None):
            out.append((p.skeleton[skel_next], "skeleton"))
            skel_next += 1

    for t in p.tensors:
        gap = t.offset - file_pos
        skel_pos += gap
        skeleton_upto(skel_pos)
        out.extend((c, f"tensor {t.name}") for c in t.chunks)
        file_pos = t.end
    skeleton_upto(p.skeleton_nbytes)
    return out


def missing_chunks(p: Pointer, store: ChunkStore) -> list[str]:
    """Chunk ids of ``p`` that the local store lacks."""
    return [c for c in sorted(p.chunk_ids()) if not store.has(c)]


def decoded_chunks(store: ChunkStore, order: list[tuple[str, str]], path: str, workers: int) -> Iterator[np.ndarray]:
    """Decode chunks in ``order`` on a pool, at most ``2 × workers`` in flight (each a fresh array)."""
    yield from _decoded(store, order, path, workers, None)


class _Buffers:
    """Chunk-sized output buffers handed to the decoders and given back once written: a smudge
    allocates about ``2 × workers + 2`` of them in all instead of a fresh one per chunk (each fresh
    one cost page faults and zeroing in the kernel). Threads take, the writer gives back."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self.free: deque[np.ndarray] = deque()

    def take(self, n: int) -> np.ndarray:
        if n > self.nbytes:
            return np.empty(n, dtype=np.uint8)
        try:
            b = self.free.pop()  # deque.pop/append are atomic: no lock
        except IndexError:
            b = np.empty(self.nbytes, dtype=np.uint8)
        return b[:n]

    def give(self, view: np.ndarray) -> None:
        b = view.base if view.base is not None else view
        if isinstance(b, np.ndarray) and b.size == self.nbytes and b.ndim == 1:
            self.free.append(b)


def _decoded(
    store: ChunkStore, order: list[tuple[str, str]], path: str, workers: int, bufs: _Buffers | None
) -> Iterator[np.ndarray]:
    alloc = bufs.take if bufs is not None else None

    def one(cid: str, what: str) -> np.ndarray:
        return store.get(cid, f"{path}: {what}", alloc)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window: deque[Future[np.ndarray]] = deque()
        it = iter(order)
        for cid, what in it:
            window.append(pool.submit(one, cid, what))
            if len(window) >= 2 * max(1, workers):
                break
        while window:
            got = window.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                window.append(pool.submit(one, *nxt))
            yield got


def smudge(p: Pointer, store: ChunkStore, write: Write, *, path: str = "", workers: int = 2) -> None:
    """Write the file that ``p`` names through ``write``; raise before writing if a chunk is missing.

    ``write`` must be done with each view when it returns (copy what it keeps): the buffers behind
    them are reused for the chunks that follow."""
    gone = missing_chunks(p, store)
    if gone and store.fetcher is not None:
        store.fetcher(gone)
        gone = missing_chunks(p, store)
    if gone:
        owner = next((f"tensor {t.name}" for t in p.tensors if gone[0] in t.chunks), "skeleton")
        raise MissingObjectError(gone[0], f"{path}: {owner}; {len(gone)} chunk(s) missing")
    hasher = xxhash.xxh3_128()
    bufs = _Buffers(p.chunk_bytes)
    chunks = _decoded(store, chunk_order(p), path, workers, bufs)
    skel_buf = np.empty(0, dtype=np.uint8)
    skel_whole = skel_buf
    file_pos = 0

    def emit(b: np.ndarray) -> None:
        mv = memoryview(b)
        hasher.update(mv)
        write(mv)

    def skeleton(n: int) -> None:
        nonlocal skel_buf, skel_whole
        while n:
            if skel_buf.size == 0:
                bufs.give(skel_whole)
                skel_buf = skel_whole = next(chunks)
            take = min(n, skel_buf.size)
            emit(skel_buf[:take])
            skel_buf = skel_buf[take:]
            n -= take

    for t in p.tensors:
        skeleton(t.offset - file_pos)
        got = 0
        for _ in t.chunks:
            c = next(chunks)
            got += c.size
            emit(c)
            bufs.give(c)
        if got != t.nbytes:
            raise CorruptObjectError(t.chunks[0] if t.chunks else "-", f"tensor has {got} bytes, pointer says {t.nbytes}", f"{path}: tensor {t.name}")
        file_pos = t.end
    skeleton(p.size - file_pos)
    if hasher.hexdigest() != p.file_id:
        raise CorruptObjectError(p.file_id, "the rebuilt file does not match the pointer's file id", path)
