"""Cut a tensor's bytes into element-aligned chunks that form a regular (Zarr-style) chunk grid.

A chunk covers ``k`` consecutive indices of one axis ``j`` and the whole of every later axis, with
index 1 on every earlier axis. Each chunk is therefore one contiguous byte range, chunks in C order
of the grid follow file order, and the same shape always gives the same boundaries.
"""

from __future__ import annotations

import math

from ..dtypes import BLOCK_DTYPES, DTYPE_BITS, itemsize

DEFAULT_CHUNK_BYTES = 1 << 20


def chunk_shape(shape: tuple[int, ...], elem: int, target: int = DEFAULT_CHUNK_BYTES) -> tuple[int, ...]:
    """The chunk shape for a C-order array of ``shape`` with ``elem``-byte elements."""
    if not shape:
        return ()
    inner = elem
    for j in range(len(shape) - 1, -1, -1):
        outer_inner = inner * shape[j]
        if outer_inner > target or j == 0:
            # inner <= target here: every later axis fitted, so at least one index of axis j fits
            k = max(1, min(shape[j], target // inner))
            return (1,) * j + (k,) + tuple(shape[j + 1 :])
        inner = outer_inner
    raise AssertionError("unreachable")


def tensor_chunks(dtype: str, shape: tuple[int, ...], nbytes: int, target: int = DEFAULT_CHUNK_BYTES) -> list[tuple[int, int]]:
    """Byte ranges ``(start, end)`` relative to the tensor's first byte, in order."""
    bits = DTYPE_BITS.get(dtype)
    elem = itemsize(dtype)
    if nbytes == 0:
        return []
    if dtype in BLOCK_DTYPES and shape:
        # block-quantized (ggml): the grid is over whole blocks of the last axis, so no block is split
        block, elem = BLOCK_DTYPES[dtype]
        if shape[-1] % block == 0 and math.prod(shape) // block * elem == nbytes:
            return _grid_chunks((*shape[:-1], shape[-1] // block), elem, target)
        return byte_chunks(nbytes, target)
    if bits is None or bits % 8 or math.prod(shape) * elem != nbytes or not shape:
        return byte_chunks(nbytes, target)
    return _grid_chunks(shape, elem, target)


def _grid_chunks(shape: tuple[int, ...], elem: int, target: int) -> list[tuple[int, int]]:
    """The byte ranges of the :func:`chunk_shape` grid of a C-order array (``nbytes > 0``)."""
    cs = chunk_shape(shape, elem, target)
    # the split axis: the first whose chunk extent is not 1 (a chunk of one index of axis j is the
    # same byte range as a chunk of the whole axis j + 1, so either reading gives the same cuts)
    j = next((i for i, c in enumerate(cs) if c != 1), len(cs) - 1)
    row = elem * math.prod(shape[j + 1 :])
    k = cs[j]
    outer = math.prod(shape[:j])
    span = shape[j] * row
    out: list[tuple[int, int]] = []
    for o in range(outer):
        base = o * span
        for start in range(0, shape[j], k):
            stop = min(start + k, shape[j])
            out.append((base + start * row, base + stop * row))
    return out


def byte_chunks(nbytes: int, target: int = DEFAULT_CHUNK_BYTES) -> list[tuple[int, int]]:
    """Plain fixed-size byte ranges (skeleton, opaque files, sub-byte dtypes)."""
    return [(s, min(s + target, nbytes)) for s in range(0, nbytes, target)]
