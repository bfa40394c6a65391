"""Dequantize the simple ggml block types with numpy, for statistics on GGUF tensors (diff, API).

Only reads bytes; blocks are decoded vectorised, one whole tensor (or any whole number of blocks)
at a time. Covered: ``Q8_0 Q4_0 Q4_1 Q5_0 Q5_1`` (the legacy 32-element blocks). Anything else,
plain float types included (read them as numpy arrays), returns None: callers then fall back to
byte-level summaries.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import BLOCK_DTYPES

SUPPORTED = frozenset({"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"})


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) bytes -> (n, 32) values: low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """(n, 4) bytes of a little-endian u32 -> (n, 32) values of bit ``j`` moved to bit 4."""
    bits = np.unpackbits(qh, axis=1, bitorder="little")
    return bits.astype(np.uint8) << 4


def dequantize(dtype: str, raw: np.ndarray | bytes | memoryview) -> np.ndarray | None:
    """The float32 values of ``raw`` (whole blocks of ``dtype``), flat; None if ``dtype`` is not covered."""
    if dtype not in SUPPORTED:
        return None
    _, nbytes = BLOCK_DTYPES[dtype]
    b = np.frombuffer(raw, dtype=np.uint8)
    if b.size % nbytes:
        raise ValueError(f"{b.size} bytes are not whole {dtype} blocks of {nbytes} bytes")
    b = b.reshape(-1, nbytes)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    if dtype == "Q8_0":
        q = b[:, 2:].copy().view(np.int8).astype(np.float32)
        return (q * d).reshape(-1)
    if dtype == "Q4_0":
        return ((_nibbles(b[:, 2:]).astype(np.float32) - 8) * d).reshape(-1)
    if dtype == "Q4_1":
        m = b[:, 2:4].copy().view(np.float16).astype(np.float32)
        return (_nibbles(b[:, 4:]).astype(np.float32) * d + m).reshape(-1)
    if dtype == "Q5_0":
        q = _nibbles(b[:, 6:]) | _high_bits(b[:, 2:6])
        return ((q.astype(np.float32) - 16) * d).reshape(-1)
    m = b[:, 2:4].copy().view(np.float16).astype(np.float32)  # Q5_1
    q = _nibbles(b[:, 8:]) | _high_bits(b[:, 4:8])
    return (q.astype(np.float32) * d + m).reshape(-1)
