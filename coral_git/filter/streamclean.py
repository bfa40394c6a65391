"""Clean a safetensors file while git is still sending it: no spool file, one pass.

The header comes first, so chunk boundaries are known before the tensor bytes arrive; each chunk is
hashed and stored as soon as it is complete, and only the skeleton (header, gaps, trailing bytes) is
kept in memory. The pointer is exactly the one :func:`coral_git.filter.clean.clean` gives the same bytes.
When the file turns out not to be a valid safetensors file after all (e.g. truncated), every byte
received is still recoverable — from the store or the kept skeleton — and :meth:`materialize`
writes it back so the caller can fall back to the ordinary clean.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import BinaryIO

import numpy as np

from ..core import pointer as ptr
from ..core.chunking import byte_chunks
from ..errors import FormatError
from ..formats import safetensors
from ..store.chunkstore import ChunkStore
from ..store.recent import RecentTensors
from .clean import Tracked, assemble, store_chunk, synced, tensor_jobs

SKELETON_CAP = 64 << 20


class Fallback(Exception):
    """Streaming cannot finish this file; materialize what was received and clean it normally."""


class StreamingClean:
    """Feed the file's bytes in order with :meth:`feed`; :meth:`finish` returns the pointer."""

    def __init__(
        self,
        head: bytes,
        store: ChunkStore,
        *,
        previous: ptr.Pointer | None,
        recent: RecentTensors | None,
        chunk_bytes: int,
        workers: int,
        tracked: Tracked | None = None,
    ) -> None:
        if not safetensors.probe(memoryview(head)):
            raise FormatError("not a safetensors header")
        hlen = safetensors.header_length(head)
        if hlen > len(head):
            raise FormatError("header not complete in the first bytes")
        self.header = head[:hlen]
        layout = safetensors.read_header(self.header, 1 << 62)  # the real size is checked in finish()
        self.spans_layout = layout
        self.store, self.previous, self.recent = store, previous, recent
        self.chunk_bytes = chunk_bytes
        self.jobs, self.spans = tensor_jobs(layout, previous, recent, chunk_bytes, tracked)
        # regions in file order: tensor jobs, with skeleton bytes wherever none covers the file
        self.regions: list[tuple[int, int, int]] = [(j[0][0][0], j[0][0][1], i) for i, j in enumerate(self.jobs)]
        self.ri = 0
        self.pos = 0
        self.skel = bytearray()
        self.cur: np.ndarray | None = None
        self.results: list[Future[tuple[str, bool]] | None] = [None] * len(self.jobs)
        self.workers = max(1, workers)
        store.begin_pack(sum(t.nbytes for t in layout.tensors))  # large: new objects into one pack
        self.pool = ThreadPoolExecutor(max_workers=self.workers)
        self.window: deque[Future[tuple[str, bool]]] = deque()

    def feed(self, data: bytes | memoryview) -> None:
        """Consume the next bytes of the file (raises Fallback before consuming anything)."""
        if len(self.skel) + len(data) > SKELETON_CAP:
            raise Fallback("skeleton larger than the streaming cap")
        mv = memoryview(data).cast("B")
        while mv:
            if self.ri < len(self.regions) and self.pos >= self.regions[self.ri][0]:
                start, end, job = self.regions[self.ri]
                if self.cur is None:
                    self.cur = np.empty(end - start, dtype=np.uint8)
                off = self.pos - start
                take = min(len(mv), end - self.pos)
                self.cur[off : off + take] = np.frombuffer(mv[:take], dtype=np.uint8)
                self.pos += take
                mv = mv[take:]
                if self.pos == end:
                    self._submit(job, self.cur)
                    self.cur = None
                    self.ri += 1
            else:
                limit = self.regions[self.ri][0] if self.ri < len(self.regions) else None
                take = len(mv) if limit is None else min(len(mv), limit - self.pos)
                self.skel += mv[:take]
                self.pos += take
                mv = mv[take:]

    def _submit(self, job: int, raw: np.ndarray) -> None:
        _, elem, base = self.jobs[job]

        fut = self.pool.submit(store_chunk, self.store, raw, elem, base)
        self.results[job] = fut
        self.window.append(fut)
        while len(self.window) > 2 * self.workers:
            self.window.popleft().result()  # bounded memory: wait for the oldest chunk

    def finish(self, file_id: str) -> ptr.Pointer:
        """The pointer, or Fallback when the bytes are not a valid safetensors file after all."""
        if self.ri < len(self.regions) or self.cur is not None:
            raise Fallback("file ended inside a tensor")
        try:
            layout = safetensors.read_header(self.header, self.pos)
        except FormatError as exc:
            raise Fallback(str(exc)) from None
        tensor_results = [f.result() for f in self.results]  # type: ignore[union-attr]
        prev_skel = self.previous.skeleton if self.previous and self.previous.chunk_bytes == self.chunk_bytes else ()
        skel = np.frombuffer(bytes(self.skel), dtype=np.uint8)
        skel_jobs = []
        for i, (s, e) in enumerate(byte_chunks(skel.size, self.chunk_bytes)):  # clean's skeleton cut, on contiguous bytes
            base = prev_skel[i] if i < len(prev_skel) else None
            skel_jobs.append(self.pool.submit(store_chunk, self.store, skel[s:e], 1, base))
        skel_results = [f.result() for f in skel_jobs]
        assert layout.skeleton_size() == skel.size
        spans = [(t, first + len(skel_results), n) for t, first, n in self.spans]
        try:
            return synced(self.store, self.pool, lambda: assemble(
                layout, skel_results + tensor_results, len(skel_results), spans, file_id, self.chunk_bytes, self.recent
            ))
        finally:
            self.close()

    def materialize(self, out: BinaryIO) -> None:
        """Write every byte received so far, in order, to ``out`` (from the store and the kept skeleton)."""
        skel_pos = 0
        pos = 0
        for start, end, job in self.regions[: self.ri]:
            if start > pos:
                out.write(self.skel[skel_pos : skel_pos + start - pos])
                skel_pos += start - pos
            fut = self.results[job]
            assert fut is not None
            out.write(self.store.get(fut.result()[0]).tobytes())
            pos = end
        if self.cur is not None:
            start = self.regions[self.ri][0]
            if start > pos:
                out.write(self.skel[skel_pos : skel_pos + start - pos])
                skel_pos += start - pos
            out.write(self.cur[: self.pos - start].tobytes())
        else:
            out.write(self.skel[skel_pos:])
        self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.store.abort_pack()  # unless finish() made it a pack: git gets no pointer for this add

