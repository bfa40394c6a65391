"""Content-defined chunk boundaries for bytes without tensor structure (FastCDC 2020 via ``pyfastcdc``).

Fixed-size cuts (:func:`chunking.byte_chunks`) move every later boundary when a few bytes are
inserted early in a file, so nothing after the edit deduplicates. A gear-hash boundary depends only
on the bytes just before it, so after an insertion the cuts fall back into step within a chunk or
two. Boundaries depend on the bytes and ``chunk_bytes`` alone (fixed gear table, seed 0, NC 1).

Sizes, measured with ``benchmarks/bench_formats.py --cdc``: min = chunk/4, avg = 3·chunk/4 (FastCDC's
mean is avg + min, so chunks average about ``chunk_bytes``), max = 4·chunk, each clamped to what
pyfastcdc accepts. Clean cuts opaque files with it and writes ``chunking cdc-<min>-<avg>-<max>``
(docs/format.md).
"""

from __future__ import annotations

CDC_MARKER = "fastcdc"


def cdc_params(chunk_bytes: int) -> tuple[int, int, int]:
    """``(min, avg, max)`` sizes for a target mean of ``chunk_bytes``, within pyfastcdc's limits."""
    lo = min(max(64, chunk_bytes // 4), 1 << 20)
    avg = min(max(256, chunk_bytes * 3 // 4), 4 << 20)
    hi = min(max(1024, chunk_bytes * 4, avg + 1), 16 << 20)
    return lo, avg, hi


def _chunker(chunk_bytes: int):  # pyfastcdc.FastCDC, imported lazily; one per call (not thread-safe)
    from pyfastcdc import FastCDC

    lo, avg, hi = cdc_params(chunk_bytes)
    return FastCDC(avg, min_size=lo, max_size=hi, normalized_chunking=1, seed=0)


def cdc_ranges(buf: bytes | bytearray | memoryview, chunk_bytes: int) -> list[tuple[int, int]]:
    """Content-defined ``(start, end)`` ranges covering ``buf`` in order (``[]`` when empty)."""
    if not len(buf):
        return []
    out: list[tuple[int, int]] = []
    for c in _chunker(chunk_bytes).cut_buf(buf):
        out.append((c.offset, c.offset + c.length))
    return out
