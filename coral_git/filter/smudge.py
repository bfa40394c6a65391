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
    """Decode chunks in ``order`` on a pool, at most ``2 × workers`` in flight."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window: deque[Future[np.ndarray]] = deque()
        it = iter(order)
        for cid, what in it:
            window.append(pool.submit(store.get, cid, f"{path}: {what}"))
            if len(window) >= 2 * max(1, workers):
                break
        while window:
            yield window.popleft().result()
            nxt = next(it, None)
            if nxt is not None:
                window.append(pool.submit(store.get, nxt[0], f"{path}: {nxt[1]}"))


def smudge(p: Pointer, store: ChunkStore, write: Write, *, path: str = "", workers: int = 2) -> None:
    """Write the file that ``p`` names through ``write``; raise before writing if a chunk is missing."""
    gone = missing_chunks(p, store)
    if gone and store.fetcher is not None:
        store.fetcher(gone)
        gone = missing_chunks(p, store)
    if gone:
        owner = next((f"tensor {t.name}" for t in p.tensors if gone[0] in t.chunks), "skeleton")
        raise MissingObjectError(gone[0], f"{path}: {owner}; {len(gone)} chunk(s) missing")
    hasher = xxhash.xxh3_128()
    chunks = decoded_chunks(store, chunk_order(p), path, workers)
    skel_buf = np.empty(0, dtype=np.uint8)
    file_pos = 0

    def emit(b: np.ndarray) -> None:
        mv = memoryview(b)
        hasher.update(mv)
        write(mv)

    def skeleton(n: int) -> None:
        nonlocal skel_buf
        while n:
            if skel_buf.size == 0:
                skel_buf = next(chunks)
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
        if got != t.nbytes:
            raise CorruptObjectError(t.chunks[0] if t.chunks else "-", f"tensor has {got} bytes, pointer says {t.nbytes}", f"{path}: tensor {t.name}")
        file_pos = t.end
    skeleton(p.size - file_pos)
    if hasher.hexdigest() != p.file_id:
        raise CorruptObjectError(p.file_id, "the rebuilt file does not match the pointer's file id", path)
