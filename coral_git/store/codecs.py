"""Chunk codecs: each a small class with ``encode``/``decode`` and a one-byte code in a registry.

Keyframe codecs see only the chunk; delta codecs also see the raw bytes of a base chunk of the same
length. Every codec is lossless on bit patterns: deltas are integer subtraction (wrapping) or XOR of
the elements' bit patterns, never float arithmetic.
"""

from __future__ import annotations

import threading
from typing import ClassVar

import numpy as np

from . import planecoding as pc

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_INT = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def group_bytes(raw: np.ndarray, elem: int, out: np.ndarray | None = None, tmp: np.ndarray | None = None) -> np.ndarray:
    """One plane per byte of the element: all first bytes, then all second bytes, ...

    ``out``: a uint8 buffer of ``raw.size`` bytes to group into (a codec's reused scratch: a fresh
    multi-MB array costs a page fault and a zeroed page per 4 KiB, more than the copy itself).
    ``tmp`` (as large): with it, 2- and 4-byte elements are split by shifts of whole elements and
    a narrowing copy per plane (plane k = the low byte of element >> 8k, little-endian), 2-8x faster
    than numpy's strided transposing copy."""
    if elem == 1:
        return raw
    if out is None:
        return np.ascontiguousarray(raw.reshape(-1, elem).T)
    planes = out.reshape(elem, -1)
    if tmp is not None and elem in (2, 4) and raw.dtype.byteorder in "=|<" and np.little_endian:
        u = raw.view(_UINT[elem])
        shifted = tmp.view(_UINT[elem])
        np.copyto(planes[0], u, casting="unsafe")
        for k in range(1, elem):
            np.right_shift(u, 8 * k, out=shifted)
            np.copyto(planes[k], shifted, casting="unsafe")
        return out
    np.copyto(planes, raw.reshape(-1, elem).T)
    return out


def ungroup_bytes(planes: np.ndarray, elem: int) -> np.ndarray:
    if elem == 1:
        return planes
    # one strided copy per plane is ~3x faster in numpy than a transposing copy of the whole block
    q = planes.reshape(elem, -1)
    out = np.empty((q.shape[1], elem), dtype=np.uint8)
    for i in range(elem):
        out[:, i] = q[i]
    return out.reshape(-1)


def _elem(raw_len: int, itemsize: int) -> int:
    """Element width used for grouping: the dtype's when the length allows it, else bytes."""
    return itemsize if itemsize in _UINT and raw_len % itemsize == 0 else 1


class Codec:
    """Base class; subclasses register themselves by ``code``."""

    code: ClassVar[int]
    name: ClassVar[str]
    delta: ClassVar[bool] = False
    registry: ClassVar[dict[int, type[Codec]]] = {}

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        Codec.registry[cls.code] = cls

    def __init__(self, level: int = 1) -> None:
        from numcodecs import Zstd  # on first use: numcodecs' package import costs a filter's start-up ~30 ms

        self.zstd = Zstd(level=level)

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        raise NotImplementedError

    def scratch(self, name: str, nbytes: int) -> np.ndarray:
        """A uint8 buffer of ``nbytes`` owned by this codec and thread, reused from one encode to
        the next (never returned to callers: encoders hand out the compressed bytes only)."""
        tls = self.__dict__.get("_tls")
        if tls is None:
            tls = self.__dict__.setdefault("_tls", threading.local())
        bufs = tls.__dict__.setdefault("bufs", {})
        buf = bufs.get(name)
        if buf is None or buf.size < nbytes:
            buf = bufs[name] = np.empty(max(nbytes, 1), dtype=np.uint8)
        return buf[:nbytes]

    def decode(self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def _unzstd(self, payload: bytes, raw_len: int) -> np.ndarray:
        out = np.empty(raw_len, dtype=np.uint8)
        if raw_len:
            self.zstd.decode(payload, out=out)
        return out


class RawCodec(Codec):
    """Bytes as they are: for chunks that no codec makes smaller."""

    code = 0
    name = "raw"

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        return raw.tobytes()

    def decode(self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None) -> np.ndarray:
        out = np.frombuffer(payload, dtype=np.uint8)
        if out.size != raw_len:
            raise ValueError(f"raw payload has {out.size} bytes, header says {raw_len}")
        return out


class GroupZstdCodec(Codec):
    """Keyframe: byte grouping then zstd."""

    code = 1
    name = "bg-zstd"

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        e = _elem(raw.size, itemsize)
        return bytes(self.zstd.encode(group_bytes(raw, e, self.scratch("group", raw.size), self.scratch("shift", raw.size))))

    def decode(self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None) -> np.ndarray:
        return ungroup_bytes(self._unzstd(payload, raw_len), _elem(raw_len, itemsize))


class SubZigzagCodec(Codec):
    """Delta: wrapping integer subtraction of bit patterns, zigzag, byte grouping, zstd."""

    code = 2
    name = "sub-zz-bg-zstd"
    delta = True

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        assert base is not None and base.size == raw.size
        e = _elem(raw.size, itemsize)
        # in place in two reused buffers: d = raw - base (wrapping), z = (d << 1) ^ (d >> bits-1)
        d = self.scratch("delta", raw.size).view(_INT[e])
        np.subtract(raw.view(_UINT[e]), base.view(_UINT[e]), out=d.view(_UINT[e]))
        sign = self.scratch("sign", raw.size).view(_INT[e])
        np.right_shift(d, 8 * e - 1, out=sign)
        np.left_shift(d, 1, out=d)
        np.bitwise_xor(d, sign, out=d)
        return bytes(self.zstd.encode(group_bytes(d.view(np.uint8), e, self.scratch("group", raw.size), sign.view(np.uint8))))

    def decode(self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None) -> np.ndarray:
        assert base is not None and base.size == raw_len
        e = _elem(raw_len, itemsize)
        z = ungroup_bytes(self._unzstd(payload, raw_len), e).view(_UINT[e])
        # unzigzag in place: d = (z >> 1) ^ -(z & 1), then add the base (all wrapping)
        sign = z & 1
        np.negative(sign, out=sign)
        z >>= 1
        z ^= sign
        z += base.view(_UINT[e])
        return z.view(np.uint8)


class XorCodec(Codec):
    """Delta: XOR of bit patterns, byte grouping, zstd."""

    code = 3
    name = "xor-bg-zstd"
    delta = True

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        assert base is not None and base.size == raw.size
        return bytes(self.zstd.encode(group_bytes(raw ^ base, _elem(raw.size, itemsize))))

    def decode(self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None) -> np.ndarray:
        assert base is not None and base.size == raw_len
        return ungroup_bytes(self._unzstd(payload, raw_len), _elem(raw_len, itemsize)) ^ base


class RotPlanesCodec(Codec):
    """Keyframe: sign bit rotated to the bottom (so the top plane is the exponent), byte grouping,
    each plane stored raw or as its own zstd frame, whichever is smaller."""

    code = 4
    name = "rot-planes"

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        e = _elem(raw.size, itemsize)
        u = pc.UINT[e]
        v = raw.view(u)
        r = (v << np.array(1, u)) | (v >> np.array(8 * e - 1, u))
        planes = group_bytes(r.view(np.uint8), e).reshape(e, -1)
        out: list[bytes] = []
        for k in range(e):
            pc.put_stream(out, planes[k], self.zstd)
        return b"".join(out)

    def decode(self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None) -> np.ndarray:
        e = _elem(raw_len, itemsize)
        u = pc.UINT[e]
        planes = np.empty((e, raw_len // e), dtype=np.uint8)
        rd = pc.StreamReader(payload, self.zstd)
        for k in range(e):
            rd.take(planes.shape[1], out=planes[k])
        rd.done()
        r = ungroup_bytes(planes.reshape(-1), e).view(u)
        v = r >> np.array(1, u)
        v |= r << np.array(8 * e - 1, u)
        return v.view(np.uint8)


class SubZigzagPlanesCodec(Codec):
    """Delta: zigzagged wrapping integer difference, split into a mask of changed elements and, for the
    changed ones sorted by the base's exponent byte and by byte length, per-plane streams of leading
    (entropy-coded) and trailing (raw) bytes. See docs/format.md.

    The permutation is done by numpy (the reference) or by ``planekernels`` (numba, bucket cursors: no
    sort, no index arrays; 1.3-3.3x faster decode); both write and read the same bytes. numba
    costs a process ~1.5-2 s (import, then loading the cached kernels), which pays for itself only after
    some 300 MB of codec-5 data, so by default (``kernels=None``) a codec switches to the kernels once it
    has coded ``KERNELS_AFTER`` bytes, and only when numba is installed."""

    KERNELS_AFTER: ClassVar[int] = 256 << 20

    code = 5
    name = "sub-zz-ctx-planes"
    delta = True

    def __init__(self, level: int = 1, kernels: bool | None = None) -> None:
        super().__init__(level)
        self._auto = kernels is None
        self._seen = 0
        self.kernels = pc.kernels() if kernels else None

    def _use_kernels(self, nbytes: int) -> bool:
        if self._auto and self.kernels is None:
            self._seen += nbytes
            if self._seen >= self.KERNELS_AFTER:
                self._auto = False
                self.kernels = pc.kernels()
        return self.kernels is not None

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        assert base is not None and base.size == raw.size
        e = _elem(raw.size, itemsize)
        z = pc.zigzag(raw, base, e)
        out: list[bytes] = []
        if self._use_kernels(raw.size):
            nz = z != 0
            pc.put_stream(out, np.packbits(nz), self.zstd)
            idx = pc.sparse_index(nz)
            cls, _, h2, planes = self.kernels.split(z, idx, base.view(pc.UINT[e]), e)
            m = cls.size
            if m == 0:
                return b"".join(out)
            if e > 1:
                pc.put_stream(out, pc.pack_classes(cls, e), self.zstd)
            counts = h2.sum(axis=1)
            s = np.concatenate([[0], np.cumsum(counts)])
            off = 0
            for k in range(e):
                for n in (counts[k], m - s[k + 1]):
                    if n:
                        pc.put_stream(out, planes[off : off + n], self.zstd)
                    off += n
            return b"".join(out)
        nz = z != 0
        pc.put_stream(out, np.packbits(nz), self.zstd)
        order = pc.context_order(nz, base, e)
        m = order.size
        if m == 0:
            return b"".join(out)
        zs = z[order]
        if e > 1:
            cls = pc.byte_length_class(zs, e)
            pc.put_stream(out, pc.pack_classes(cls, e), self.zstd)
            by_class, counts = pc.class_order(cls, e)
            zs = zs[by_class]
            cum = np.concatenate([[0], np.cumsum(counts)])
        else:
            cum = np.array([0, m])
        planes = group_bytes(zs.view(np.uint8), e).reshape(e, m)
        for k in range(e):
            for lo, hi in ((cum[k], cum[k + 1]), (cum[k + 1], m)):
                if hi > lo:
                    pc.put_stream(out, planes[k, lo:hi], self.zstd)
        return b"".join(out)

    def decode(self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None) -> np.ndarray:
        assert base is not None and base.size == raw_len
        e = _elem(raw_len, itemsize)
        n = raw_len // e
        rd = pc.StreamReader(payload, self.zstd)
        nz = np.unpackbits(rd.take((n + 7) // 8), count=n).view(bool)
        if self._use_kernels(raw_len):
            return self._decode_kernels(rd, nz, base.view(pc.UINT[e]), e)
        z = np.zeros(n, dtype=pc.UINT[e])
        order = pc.context_order(nz, base, e)
        m = order.size
        if m:
            if e > 1:
                cls = pc.unpack_classes(rd.take((m * pc.CLASS_BITS[e] + 7) // 8), m, e)
                by_class, counts = pc.class_order(cls, e)
                order = order[by_class]
                cum = np.concatenate([[0], np.cumsum(counts)])
            else:
                cum = np.array([0, m])
            planes = np.zeros((e, m), dtype=np.uint8)
            for k in range(e):
                for lo, hi in ((cum[k], cum[k + 1]), (cum[k + 1], m)):
                    if hi > lo:
                        rd.take(int(hi - lo), out=planes[k, lo:hi])
            z[order] = ungroup_bytes(planes.reshape(-1), e).view(pc.UINT[e])
        rd.done()
        return pc.unzigzag_add(z, base, e)

    def _decode_kernels(self, rd: pc.StreamReader, nz: np.ndarray, base: np.ndarray, e: int) -> np.ndarray:
        k = self.kernels
        assert k is not None
        m = int(np.count_nonzero(nz))
        idx = pc.sparse_index(nz, m)
        out = np.empty(base.size, dtype=base.dtype)
        if idx.size or m == 0:
            np.copyto(out, base)
        if m == 0:
            rd.done()
            return out.view(np.uint8)
        w = pc.CLASS_BITS.get(e, 0)
        cls = k.unpack_classes(rd.take((m * w + 7) // 8) if w else np.zeros(0, np.uint8), m, w)
        h, h2 = k.histograms(nz, idx, base, cls, e)
        counts = h2.sum(axis=1)
        if counts.sum() != m:
            raise ValueError("byte-length class out of range")
        s = np.concatenate([[0], np.cumsum(counts)])
        planes = np.empty(int(sum(m - s[q] for q in range(e))), dtype=np.uint8)
        off = 0
        for q in range(e):
            for n in (int(counts[q]), int(m - s[q + 1])):
                if n:
                    rd.take(n, out=planes[off : off + n])
                off += n
        rd.done()
        k.assemble(nz, idx, base, cls, h, h2, planes, out)
        return out.view(np.uint8)


def codec(code: int, level: int = 1) -> Codec:
    """The codec registered under ``code``; KeyError if unknown."""
    return Codec.registry[code](level)
