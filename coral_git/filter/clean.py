"""clean: file bytes → chunks in the store + a pointer for git."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import xxhash

from ..core import pointer as ptr
from ..core.cdc import cdc_params, cdc_ranges
from ..core.chunking import byte_chunks, tensor_chunks
from ..core.mapped import MappedFile
from ..dtypes import itemsize
from ..errors import PointerError
from ..formats.layout import Layout, TensorSpan
from ..formats.registry import detect
from ..store.basechoice import Pick, choose
from ..store.chunkstore import ChunkStore, chunk_id
from ..store.recent import RecentTensors

Tracked = Callable[[str, str, tuple[int, ...], int], list[tuple[str, ...]]]  # signature → versions held by other paths


@dataclass
class CleanResult:
    """The pointer plus what the clean cost the store."""

    pointer: ptr.Pointer
    new_chunks: int
    total_chunks: int
    note: str | None


Ranges = list[tuple[int, int]]


def skeleton_pieces(layout: Layout, chunk_bytes: int) -> Iterator[Ranges]:
    """The skeleton (every byte outside spans) cut into ``chunk_bytes`` pieces, each as file ranges."""
    gaps = layout.gaps()
    total = sum(e - s for s, e in gaps)
    gi, gpos = 0, gaps[0][0] if gaps else 0
    for start, end in byte_chunks(total, chunk_bytes):
        need = end - start
        parts: Ranges = []
        while need:
            ge = gaps[gi][1]
            take = min(need, ge - gpos)
            parts.append((gpos, gpos + take))
            need -= take
            gpos += take
            if gpos == ge and gi + 1 < len(gaps):
                gi += 1
                gpos = gaps[gi][0]
        yield parts


def store_chunk(store: ChunkStore, raw: np.ndarray, itemsize: int, base: str | Pick | None) -> tuple[str, bool]:
    """Store one chunk (clean's and streaming clean's one step): its id, and whether it was new."""
    cid = chunk_id(raw)
    if isinstance(base, Pick):  # a new path's tensor: its first new chunk tries the candidates
        base = None if store.has(cid) else base.choice.base(store, base.index, raw, itemsize)
    return cid, store.put(raw, itemsize, base, cid=cid)


def opaque_cdc(layout: Layout, chunk_bytes: int) -> tuple[int, int, int] | None:
    """The ``(min, avg, max)`` content-defined cut sizes when ``layout`` is an opaque file, else None.

    Only opaque files (one skeleton gap, no tensors) get them: smudge and byte views of files with
    tensors place skeleton chunks by the fixed ``chunk_bytes`` grid.
    """
    if layout.format != "opaque" or layout.tensors or not layout.size:
        return None
    return cdc_params(chunk_bytes)


Job = tuple[Ranges, int, "str | Pick | None"]
Span = tuple[TensorSpan, int, int]


def tensor_jobs(
    layout: Layout,
    previous: ptr.Pointer | None,
    recent: RecentTensors | None,
    chunk_bytes: int,
    tracked: Tracked | None = None,
) -> tuple[list[Job], list[Span]]:
    """One job per tensor chunk (file range, itemsize, delta base), and where each tensor's jobs start.

    The base is the same path's previous version of the tensor; for a tensor without one, the
    candidates (newest recent version, versions other tracked paths hold, older recent versions)
    are left to a trial encode (store/basechoice.py)."""
    prev_tensors = previous.by_name() if previous is not None and previous.chunk_bytes == chunk_bytes else {}
    jobs: list[Job] = []
    spans: list[Span] = []
    for t in layout.tensors:
        ranges = tensor_chunks(t.dtype, t.shape, t.nbytes, chunk_bytes)
        prev = prev_tensors.get(t.name)
        bases: list[str | Pick | None]
        if prev is not None and prev.dtype == t.dtype and len(prev.chunks) == len(ranges) and prev.shape == t.shape:
            bases = list(prev.chunks)
        else:
            bases = choose(candidates(t, recent, tracked, chunk_bytes), len(ranges))
        elem = itemsize(t.dtype)
        spans.append((t, len(jobs), len(ranges)))
        for (s, e), b in zip(ranges, bases, strict=True):
            jobs.append(([(t.offset + s, t.offset + e)], elem, b))
    return jobs, spans


def candidates(
    t: TensorSpan, recent: RecentTensors | None, tracked: Tracked | None, chunk_bytes: int
) -> list[tuple[str, ...]]:
    """Base candidates for tensor ``t`` at a new path, most likely first."""
    sig = (t.name, t.dtype, t.shape, chunk_bytes)
    versions = [tuple(v) for v in recent.get_all(*sig)] if recent is not None else []
    others = tracked(*sig) if tracked is not None else []
    return versions[:1] + others + versions[1:]


def assemble(
    layout: Layout,
    results: list[tuple[str, bool]],
    nskel: int,
    spans: list[Span],
    file_id: str,
    chunk_bytes: int,
    recent: RecentTensors | None,
) -> ptr.Pointer:
    """The pointer from the chunk ids (skeleton first), updating the recent-tensor table for new tensors."""
    tensors = []
    updates: list[tuple[TensorSpan, list[str]]] = []
    for t, first, n in spans:
        chunk_ids = tuple(r[0] for r in results[first : first + n])
        tensors.append(ptr.TensorEntry(t.name, t.dtype, t.shape, t.offset, t.nbytes, chunk_ids))
        if recent is not None and n and any(r[1] for r in results[first : first + n]):
            updates.append((t, list(chunk_ids)))
    if recent is not None:
        remember(recent, updates, chunk_bytes)
    return ptr.Pointer(
        size=layout.size,
        format=layout.format,
        file_id=file_id,
        chunk_bytes=chunk_bytes,
        skeleton_nbytes=layout.skeleton_size(),
        skeleton=tuple(r[0] for r in results[:nskel]),
        tensors=tuple(tensors),
    )


def remember(recent: RecentTensors, updates: list[tuple[TensorSpan, list[str]]], chunk_bytes: int) -> None:
    """Record new tensor versions in the recent-tensor table: one append for the whole file."""
    recent.set_many([((t.name, t.dtype, t.shape, chunk_bytes), ids) for t, ids in updates])


def synced(store: ChunkStore, pool: ThreadPoolExecutor, then: Callable[[], ptr.Pointer]) -> ptr.Pointer:
    """``then()`` (the pointer, with its recent-tensor hints) while the store's
    new objects are flushed to disk on ``pool``; returns once both are done, so the objects are on
    disk before git can record the pointer. The two are I/O waits: overlapped, not added up."""
    flushed = pool.submit(store.sync)
    try:
        return then()
    finally:
        flushed.result()


def _hash_file(read: Callable[[int, int], np.ndarray], size: int, block: int = 8 << 20) -> str:
    h = xxhash.xxh3_128()
    for s in range(0, size, block):
        h.update(read(s, min(s + block, size)))
    return h.hexdigest()


def clean(
    data: memoryview | bytes | MappedFile,
    store: ChunkStore,
    *,
    previous: ptr.Pointer | None = None,
    recent: RecentTensors | None = None,
    chunk_bytes: int,
    workers: int = 2,
    file_id: str | None = None,
    tracked: Tracked | None = None,
) -> CleanResult:
    """Store ``data`` and return its pointer; a valid pointer is returned unchanged.

    ``data`` is the file's bytes, or a :class:`MappedFile` for large inputs (chunks are then copied
    out one at a time, keeping resident memory bounded). ``file_id`` may pass the whole-file hash
    when the caller already computed it while receiving the bytes.
    """
    if isinstance(data, MappedFile):
        view = data.view()
        size = data.size
        read = data.read
    else:
        view = data
        size = len(data)
        whole = np.frombuffer(data, dtype=np.uint8)

        def read(start: int, end: int) -> np.ndarray:
            return whole[start:end]

    if ptr.looks_like_pointer(view) and size <= ptr.MAX_POINTER:
        # pointer text is kept as it is; a damaged one is refused rather than committed as content,
        # which would leave a commit that looks like a model and checks out as broken text
        try:
            return CleanResult(ptr.parse(bytes(view)), 0, 0, None)
        except PointerError as exc:
            raise PointerError(
                f"this file is a damaged coral pointer ({exc}); restore it with 'git checkout <rev> -- <path>'"
            ) from None
    detected = detect(memoryview(view) if size else memoryview(b""))
    layout = detected.layout
    prev_skeleton = previous.skeleton if previous is not None and previous.chunk_bytes == chunk_bytes else ()
    # one job per chunk: (file ranges, itemsize, base id); skeleton chunks first, then each tensor's
    jobs: list[Job] = []
    cdc = opaque_cdc(layout, chunk_bytes)
    if cdc is not None:  # opaque: content-defined cuts, so an early insertion moves no later boundary
        skel_pieces = [[r] for r in cdc_ranges(view, chunk_bytes)]
        prev_skeleton = previous.skeleton if previous is not None and previous.cdc == cdc else ()
    else:
        skel_pieces = list(skeleton_pieces(layout, chunk_bytes))
    for i, piece in enumerate(skel_pieces):
        jobs.append((piece, 1, prev_skeleton[i] if i < len(prev_skeleton) else None))
    tjobs, spans = tensor_jobs(layout, previous, recent, chunk_bytes, tracked)
    spans = [(t, first + len(jobs), n) for t, first, n in spans]
    jobs.extend(tjobs)

    def run(job: Job) -> tuple[str, bool]:
        ranges, elem, base = job
        parts = [read(s, e) for s, e in ranges]
        return store_chunk(store, parts[0] if len(parts) == 1 else np.concatenate(parts), elem, base)

    store.begin_pack(size)  # a large file's new objects go into one pack, not a loose file each
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            file_hash = pool.submit(_hash_file, read, size) if file_id is None else None
            results = list(pool.map(run, jobs))
            fid = file_hash.result() if file_hash is not None else file_id
            assert fid is not None
            pointer = synced(store, pool, lambda: assemble(layout, results, len(skel_pieces), spans, fid, chunk_bytes, recent))
    except BaseException:
        store.abort_pack()  # no pointer names what this add stored
        raise
    if cdc is not None:
        pointer = replace(pointer, chunk_bytes=cdc[1], cdc=cdc)
    new = sum(1 for r in results if r[1])
    return CleanResult(pointer, new, len(jobs), detected.note)
