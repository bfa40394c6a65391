"""Building blocks of the per-plane codecs (``docs/format.md``, codecs 4 and 5).

A payload is a sequence of *streams*. Each stream is stored raw or as one zstd frame, whichever is
smaller, behind a 5-byte head (mode u8, stored size u32 LE); the decoder always knows how many bytes a
stream decodes to, so nothing else is framed. Delta payloads split the zigzagged integer delta by what
each byte is: unchanged elements go to a bit mask (element order, so runs stay runs), and for the changed
ones the decoder, knowing the base, sorts them by the base element's exponent byte (the context that
predicts a delta's magnitude) and by the delta's byte length, so that every plane becomes zeros, then
leading bytes (skewed: zstd/Huffman codes them near their entropy) then trailing bytes (near-random:
stored raw, no wasted pass).
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numcodecs import Zstd

UINT = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
INT = {1: np.dtype("<i1"), 2: np.dtype("<i2"), 4: np.dtype("<i4"), 8: np.dtype("<i8")}
STREAM_HEAD = struct.Struct("<BI")
MODE_RAW, MODE_ZSTD = 0, 1
# a stream this small is stored raw: a zstd frame's own overhead eats any gain
MIN_ZSTD = 64


def put_stream(out: list[bytes], data: np.ndarray, zstd: Zstd) -> None:
    """Append stream ``data`` (uint8) to ``out``: a zstd frame when smaller, else the bytes."""
    if data.size >= MIN_ZSTD:
        z = zstd.encode(data)
        if len(z) < data.size:
            out.append(STREAM_HEAD.pack(MODE_ZSTD, len(z)))
            out.append(bytes(z))
            return
    out.append(STREAM_HEAD.pack(MODE_RAW, data.size))
    out.append(data.tobytes())


def plane_stream_lengths(counts: np.ndarray, m: int) -> list[int]:
    """Lengths of a delta's plane streams in payload order: for each plane k its leading bytes
    (``counts[k]``, the elements of class k) then its trailing bytes (those of class > k). Back to back
    they are plane k's positions s_k … m−1, plane after plane."""
    lengths, s = [], 0
    for c in counts:
        s += int(c)
        lengths += [int(c), m - s]
    return lengths


def put_planes(out: list[bytes], planes: np.ndarray, counts: np.ndarray, m: int, zstd: Zstd) -> None:
    """Append the plane streams of ``planes`` (the concatenation above) to ``out``; empty ones are absent."""
    off = 0
    for n in plane_stream_lengths(counts, m):
        if n:
            put_stream(out, planes[off : off + n], zstd)
        off += n


def take_planes(rd: StreamReader, counts: np.ndarray, m: int, buf: np.ndarray | None = None) -> np.ndarray:
    """The plane streams read back into one array (``buf`` when given, of the right size)."""
    lengths = plane_stream_lengths(counts, m)
    planes = np.empty(sum(lengths), dtype=np.uint8) if buf is None else buf
    off = 0
    for n in lengths:
        if n:
            rd.take(n, out=planes[off : off + n])
        off += n
    return planes


class StreamReader:
    """Reads the streams of one payload in order, checking every declared size."""

    def __init__(self, payload: bytes | memoryview, zstd: Zstd) -> None:
        self.buf = memoryview(payload)
        self.pos = 0
        self.zstd = zstd

    def take(self, n: int, out: np.ndarray | None = None) -> np.ndarray:
        """The next stream, which must decode to exactly ``n`` bytes (into ``out`` when given)."""
        if self.pos + STREAM_HEAD.size > len(self.buf):
            raise ValueError("payload ends inside a stream head")
        mode, size = STREAM_HEAD.unpack_from(self.buf, self.pos)
        start = self.pos + STREAM_HEAD.size
        end = start + size
        if end > len(self.buf):
            raise ValueError("stream runs past the end of the payload")
        self.pos = end
        data = self.buf[start:end]
        if out is None:
            out = np.empty(n, dtype=np.uint8)
        if mode == MODE_RAW:
            if size != n:
                raise ValueError(f"raw stream has {size} bytes, expected {n}")
            out[:] = np.frombuffer(data, dtype=np.uint8)
        elif mode == MODE_ZSTD:
            if n == 0:
                raise ValueError("zstd stream where none is expected")
            self.zstd.decode(data, out=out)
        else:
            raise ValueError(f"unknown stream mode {mode}")
        return out

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise ValueError(f"{len(self.buf) - self.pos} trailing bytes after the last stream")


_KERNELS: list[ModuleType | None] = []


def kernels() -> ModuleType | None:
    """The compiled kernels (``planekernels``), imported on first use; None when numba is missing or
    cannot set up its cache (then the codecs use the numpy reference functions below, same bytes)."""
    if not _KERNELS:
        try:
            from . import planekernels
        except (ImportError, RuntimeError, OSError):  # no numba, or no writable cache dir for it
            planekernels = None
        _KERNELS.append(planekernels)
    return _KERNELS[0]


def sparse_index(nz: np.ndarray, m: int | None = None) -> np.ndarray:
    """Indices of the changed elements when fewer than half changed (the kernels then visit only
    those), else an empty array (they scan the mask)."""
    m = int(np.count_nonzero(nz)) if m is None else m
    return np.flatnonzero(nz) if 0 < m < nz.size // 2 else np.zeros(0, np.int64)


def exponent_context(base: np.ndarray, e: int) -> np.ndarray:
    """Per element of ``base``: bits 8e-9 … 8e-2 (the 8 bits below the sign: the exponent of fp32,
    bf16 and, truncated, fp64), as uint8."""
    v = base.view(UINT[e])
    return ((v << np.array(1, UINT[e])) >> np.array(8 * e - 8, UINT[e])).astype(np.uint8)


def context_order(nz: np.ndarray, base: np.ndarray, e: int) -> np.ndarray:
    """Indices of the changed elements (``nz``), stably sorted by the base's exponent context."""
    if nz.all():  # dense update (every weight moved): no gather through an index array
        return np.argsort(exponent_context(base, e), kind="stable")
    idx = np.flatnonzero(nz)
    return idx[np.argsort(exponent_context(base.view(UINT[e])[idx], e), kind="stable")]


def class_order(cls: np.ndarray, e: int) -> tuple[np.ndarray, np.ndarray]:
    """(stable sort of positions by class, count per class); one pass per class value is several
    times faster than numpy's stable argsort (or bincount) on such few, skewed keys."""
    parts = [np.flatnonzero(cls == k) for k in range(e)]
    counts = np.array([p.size for p in parts], dtype=np.int64)
    if counts.sum() != cls.size:
        raise ValueError("byte-length class out of range")
    parts = [p for p in parts if p.size]
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), counts


def zigzag(raw: np.ndarray, base: np.ndarray, e: int) -> np.ndarray:
    """``(d << 1) ^ (d >> (8e-1))`` of ``d = raw - base`` (wrapping, signed), as unsigned e-byte ints."""
    d = (raw.view(UINT[e]) - base.view(UINT[e])).view(INT[e])
    return ((d << np.array(1, INT[e])) ^ (d >> np.array(8 * e - 1, INT[e]))).view(UINT[e])


def unzigzag_add(z: np.ndarray, base: np.ndarray, e: int) -> np.ndarray:
    """Invert :func:`zigzag` in place on ``z`` and add ``base`` back; the raw bytes."""
    sign = z & np.array(1, UINT[e])
    np.negative(sign, out=sign)
    z >>= np.array(1, UINT[e])
    z ^= sign
    z += base.view(UINT[e])
    return z.view(np.uint8)


def byte_length_class(zs: np.ndarray, e: int) -> np.ndarray:
    """Per nonzero element: index of its highest nonzero byte (0 … e-1), as uint8."""
    cls = np.zeros(zs.size, dtype=np.uint8)
    for k in range(1, e):
        cls += zs >= np.array(1 << (8 * k), UINT[e])
    return cls


CLASS_BITS = {2: 1, 4: 2, 8: 4}


def pack_classes(cls: np.ndarray, e: int) -> np.ndarray:
    """Classes packed ``CLASS_BITS[e]`` bits each, first symbol in the high bits, zero-padded."""
    w = CLASS_BITS[e]
    per = 8 // w
    pad = (-cls.size) % per
    c = np.concatenate([cls, np.zeros(pad, np.uint8)]).reshape(-1, per)
    out = np.zeros(c.shape[0], dtype=np.uint8)
    for i in range(per):
        out |= c[:, i] << np.uint8(8 - w * (i + 1))
    return out


def unpack_classes(packed: np.ndarray, n: int, e: int) -> np.ndarray:
    w = CLASS_BITS[e]
    per = 8 // w
    mask = np.uint8((1 << w) - 1)
    out = np.empty((packed.size, per), dtype=np.uint8)
    for i in range(per):
        out[:, i] = (packed >> np.uint8(8 - w * (i + 1))) & mask
    return out.reshape(-1)[:n]
