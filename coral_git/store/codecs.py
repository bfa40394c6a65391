"""Chunk codecs: each a small class with ``encode``/``decode`` and a one-byte code in a registry.

Keyframe codecs see only the chunk; delta codecs also see the raw bytes of a base chunk of the same
length. Every codec is lossless on bit patterns: deltas are integer subtraction (wrapping) or XOR of
the elements' bit patterns, never float arithmetic.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from typing import ClassVar

import numpy as np

from . import planecoding as pc

_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_INT = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}
_LE = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


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


def ungroup_bytes(planes: np.ndarray, elem: int, out: np.ndarray | None = None) -> np.ndarray:
    """The inverse of :func:`group_bytes`, written into ``out`` (uint8, same size) when given.

    2- and 4-byte elements are built as little-endian words, highest plane first (``w = w << 8 |
    plane``): contiguous widening casts and shifts, 1.4x (fp32) to 2.9x (bf16) faster in numpy than
    one strided byte copy per plane (each byte its own store, the top user-space cost of a smudge).
    8-byte words take 15 passes: there the strided copies are faster."""
    if elem == 1:
        if out is None:
            return planes
        np.copyto(out, planes)
        return out
    if out is None:
        out = np.empty(planes.size, dtype=np.uint8)
    q = planes.reshape(elem, -1)
    if elem not in (2, 4):
        o = out.reshape(-1, elem)
        for i in range(elem):
            o[:, i] = q[i]
        return out
    w = out.view(_LE[elem])
    if elem == 4:  # the low half as 16-bit words first: two of the widening casts are to u2 (~10% faster)
        lo = scratch("ungroup-lo", w.nbytes // 2).view(_LE[2])
        np.copyto(lo, q[1])
        np.left_shift(lo, 8, out=lo)
        np.bitwise_or(lo, q[0], out=lo)
        np.copyto(w, q[3])
        np.left_shift(w, 8, out=w)
        np.bitwise_or(w, q[2], out=w)
        np.left_shift(w, 16, out=w)
        np.bitwise_or(w, lo, out=w)
        return out
    np.copyto(w, q[1])
    np.left_shift(w, 8, out=w)
    np.bitwise_or(w, q[0], out=w)
    return out


_tls = threading.local()
SCRATCH_KEEP = 8 << 20  # larger temporaries are not kept: a long-lived thread holds a few chunk-sized ones at most


def scratch(slot: str, nbytes: int) -> np.ndarray:
    """A uint8 buffer of ``nbytes`` owned by this thread, reused from call to call under the same ``slot``.

    Decoding a chunk needs a few chunk-sized temporaries; fresh ones cost more than the decode
    itself (every new multi-MiB allocation is mmapped, page-faulted and zeroed by the kernel: a third
    of a smudge's CPU was system time). The caller must be done with a slot's buffer before it asks for
    the same slot again on the same thread. Buffers above ``SCRATCH_KEEP`` are fresh each time.
    """
    if nbytes > SCRATCH_KEEP:
        return np.empty(nbytes, dtype=np.uint8)
    bufs: dict[str, np.ndarray] | None = getattr(_tls, "bufs", None)
    if bufs is None:
        bufs = _tls.bufs = {}
    b = bufs.get(slot)
    if b is None or b.size < nbytes:
        b = bufs[slot] = np.empty(max(nbytes, 1 << 16), dtype=np.uint8)
    return b[:nbytes]


def _out(out: np.ndarray | None, raw_len: int) -> np.ndarray:
    if out is None:
        return np.empty(raw_len, dtype=np.uint8)
    if out.size != raw_len or out.dtype != np.uint8:
        raise ValueError(f"output buffer has {out.size} bytes, header says {raw_len}")
    return out


def _unzigzag_add(z: np.ndarray, base: np.ndarray, e: int) -> None:
    """``z = unzigzag(z) + base`` in place, wrapping, on ``e``-byte words; one scratch temporary."""
    u = _UINT[e]
    sign = scratch("sign", z.nbytes).view(u)
    np.bitwise_and(z, u(1), out=sign)
    np.negative(sign, out=sign)
    np.right_shift(z, u(1), out=z)
    np.bitwise_xor(z, sign, out=z)
    np.add(z, base.view(u), out=z)


def _elem(raw_len: int, itemsize: int) -> int:
    """Element width used for grouping: the dtype's when the length allows it, else bytes."""
    return itemsize if itemsize in _UINT and raw_len % itemsize == 0 else 1


def _zstd_class() -> type:
    """numcodecs' ``Zstd`` (its compiled zstd: every stored byte depends on it), without the package import.

    ``import numcodecs`` registers every codec, starts blosc's threads and scans all installed packages'
    entry points: 35-45 ms of a filter's start-up for one class. Its C module ``numcodecs.zstd`` only needs
    the package's ``__path__`` to import its helpers, so it is loaded under a bare package object that is
    removed again; a later ``import numcodecs`` runs the real package and finds the same modules.
    """
    with _ZSTD_LOCK:  # codecs are made on worker threads: none may see the bare package object
        return _load_zstd()


_ZSTD_LOCK = threading.Lock()


def _load_zstd() -> type:
    if "numcodecs" in sys.modules:
        from numcodecs import Zstd

        return Zstd
    try:
        z = sys.modules.get("numcodecs.zstd")
        if z is None:
            spec = importlib.util.find_spec("numcodecs")
            if spec is None or spec.submodule_search_locations is None:
                raise ImportError("numcodecs")
            sys.modules["numcodecs"] = importlib.util.module_from_spec(spec)  # __path__ only, no __init__
            try:
                z = importlib.import_module("numcodecs.zstd")
            finally:
                del sys.modules["numcodecs"]
        return z.Zstd
    except Exception:  # a numcodecs laid out differently: the ordinary import
        from numcodecs import Zstd

        return Zstd


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
        self.zstd = _zstd_class()(level=level)

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        raise NotImplementedError

    def scratch(self, name: str, nbytes: int) -> np.ndarray:
        """An encoder's reused uint8 buffer of ``nbytes`` (this thread's :func:`scratch`, under its own
        slot names: never handed to callers, who get the compressed bytes only)."""
        return scratch("enc-" + name, nbytes)

    def decode(
        self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """The raw bytes (uint8, ``raw_len``), written into ``out`` when given (then returned).
        Without ``out`` the result may be a view of ``payload``. ``out`` must not overlap ``base``."""
        raise NotImplementedError

    def _unzstd(self, payload: bytes, raw_len: int, out: np.ndarray | None = None) -> np.ndarray:
        out = _out(out, raw_len)
        if raw_len:
            self.zstd.decode(payload, out=out)
        return out

    def _planes(self, payload: bytes, raw_len: int) -> np.ndarray:
        """The zstd frame of ``payload`` decoded into this thread's scratch buffer."""
        return self._unzstd(payload, raw_len, scratch("planes", raw_len))

    def _ungrouped(self, payload: bytes, raw_len: int, e: int, out: np.ndarray | None) -> np.ndarray:
        """A byte-grouped zstd frame back in element order, in ``out`` (or a new array)."""
        out = _out(out, raw_len)
        if e == 1:
            return self._unzstd(payload, raw_len, out)
        return ungroup_bytes(self._planes(payload, raw_len), e, out)


class RawCodec(Codec):
    """Bytes as they are: for chunks that no codec makes smaller."""

    code = 0
    name = "raw"

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        return raw.tobytes()

    def decode(
        self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        got = np.frombuffer(payload, dtype=np.uint8)
        if got.size != raw_len:
            raise ValueError(f"raw payload has {got.size} bytes, header says {raw_len}")
        if out is None:
            return got
        np.copyto(_out(out, raw_len), got)
        return out


class GroupZstdCodec(Codec):
    """Keyframe: byte grouping then zstd."""

    code = 1
    name = "bg-zstd"

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        e = _elem(raw.size, itemsize)
        return bytes(self.zstd.encode(group_bytes(raw, e, self.scratch("group", raw.size), self.scratch("shift", raw.size))))

    def decode(
        self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        return self._ungrouped(payload, raw_len, _elem(raw_len, itemsize), out)


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

    def decode(
        self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        assert base is not None and base.size == raw_len
        e = _elem(raw_len, itemsize)
        # planes (scratch) -> zigzagged words in ``out`` -> unzigzag and add the base in place
        out = self._ungrouped(payload, raw_len, e, out)
        _unzigzag_add(out.view(_UINT[e]), base, e)
        return out


class XorCodec(Codec):
    """Delta: XOR of bit patterns, byte grouping, zstd."""

    code = 3
    name = "xor-bg-zstd"
    delta = True

    def encode(self, raw: np.ndarray, itemsize: int, base: np.ndarray | None = None) -> bytes:
        assert base is not None and base.size == raw.size
        return bytes(self.zstd.encode(group_bytes(raw ^ base, _elem(raw.size, itemsize))))

    def decode(
        self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        assert base is not None and base.size == raw_len
        out = self._ungrouped(payload, raw_len, _elem(raw_len, itemsize), out)
        np.bitwise_xor(out, base, out=out)
        return out


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

    def decode(
        self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        e = _elem(raw_len, itemsize)
        u = pc.UINT[e]
        planes = scratch("planes", raw_len).reshape(e, raw_len // e)
        rd = pc.StreamReader(payload, self.zstd)
        for k in range(e):
            rd.take(planes.shape[1], out=planes[k])
        rd.done()
        r = ungroup_bytes(planes.reshape(-1), e, scratch("rot", raw_len)).view(u)
        out = _out(out, raw_len)
        v = out.view(u)
        np.right_shift(r, np.array(1, u), out=v)
        np.left_shift(r, np.array(8 * e - 1, u), out=r)
        np.bitwise_or(v, r, out=v)
        return out


class SubZigzagPlanesCodec(Codec):
    """Delta: zigzagged wrapping integer difference, split into a mask of changed elements and, for the
    changed ones sorted by the base's exponent byte and by byte length, per-plane streams of leading
    (entropy-coded) and trailing (raw) bytes. See docs/format.md.

    The permutation is done by numpy (the reference) or by ``planekernels`` (numba, counting sorts in
    linear passes; decode 2.5-4.5x faster); both write and read the same bytes. numba costs a process
    ~0.7 s (import, then loading the cached kernels), which pays for itself only after some 200 MB of
    codec-5 data, so by default (``kernels=None``) a codec switches to the kernels once it has coded
    ``KERNELS_AFTER`` bytes, and only when numba is installed."""

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
            m = int(np.count_nonzero(nz))
            if m == 0:
                return b"".join(out)
            cls, counts, planes = self.kernels.split(z, nz.view(np.uint8), pc.sparse_index(nz, m), base.view(pc.UINT[e]), m)
            if e > 1:
                pc.put_stream(out, pc.pack_classes(cls, e), self.zstd)
            pc.put_planes(out, planes, counts, m, self.zstd)
            return b"".join(out)
        nz = z != 0
        pc.put_stream(out, np.packbits(nz), self.zstd)
        order = pc.context_order(nz, base, e)
        m = order.size
        if m == 0:
            return b"".join(out)
        zs = z[order]
        counts = np.array([m])
        if e > 1:
            cls = pc.byte_length_class(zs, e)
            pc.put_stream(out, pc.pack_classes(cls, e), self.zstd)
            by_class, counts = pc.class_order(cls, e)
            zs = zs[by_class]
        s = np.concatenate([[0], np.cumsum(counts)])
        planes = group_bytes(zs.view(np.uint8), e).reshape(e, m)
        pc.put_planes(out, np.concatenate([planes[k, s[k] :] for k in range(e)]), counts, m, self.zstd)
        return b"".join(out)

    def decode(
        self, payload: bytes, itemsize: int, raw_len: int, base: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        assert base is not None and base.size == raw_len
        e = _elem(raw_len, itemsize)
        rd = pc.StreamReader(payload, self.zstd)
        if self._use_kernels(raw_len):
            return self._decode_kernels(rd, base.view(pc.UINT[e]), e, _out(out, raw_len))
        got = self._decode(rd, e, raw_len, base)
        if out is None:
            return got
        np.copyto(_out(out, raw_len), got)
        return out

    def _decode(self, rd: pc.StreamReader, e: int, raw_len: int, base: np.ndarray) -> np.ndarray:
        n = raw_len // e
        nz = np.unpackbits(rd.take((n + 7) // 8), count=n).view(bool)
        z = np.zeros(n, dtype=pc.UINT[e])
        order = pc.context_order(nz, base, e)
        m = order.size
        if m:
            counts = np.array([m])
            if e > 1:
                cls = pc.unpack_classes(rd.take((m * pc.CLASS_BITS[e] + 7) // 8), m, e)
                by_class, counts = pc.class_order(cls, e)
                order = order[by_class]
            s = np.concatenate([[0], np.cumsum(counts)])
            got = pc.take_planes(rd, counts, m)
            planes = np.zeros((e, m), dtype=np.uint8)
            off = 0
            for k in range(e):
                planes[k, s[k] :] = got[off : off + m - s[k]]
                off += m - s[k]
            z[order] = ungroup_bytes(planes.reshape(-1), e).view(pc.UINT[e])
        rd.done()
        return pc.unzigzag_add(z, base, e)

    def _decode_kernels(self, rd: pc.StreamReader, base: np.ndarray, e: int, out: np.ndarray) -> np.ndarray:
        """Decode into ``out``; every temporary is a reused per-thread buffer (slots ``c5-*``)."""
        k = self.kernels
        assert k is not None
        n = base.size
        u = out.view(base.dtype)
        bits = scratch("c5-bits", n)[:n]
        m = int(k.unpack_bits(rd.take((n + 7) // 8), n, bits))
        if m == 0:
            rd.done()
            np.copyto(u, base)
            return out
        w = pc.CLASS_BITS.get(e, 0)
        cls = scratch("c5-cls", m + 8)[: m + 8]
        counts = k.unpack_classes(rd.take((m * w + 7) // 8) if w else np.zeros(0, np.uint8), m, e, cls)
        if counts[e:].any():
            raise ValueError("byte-length class out of range")
        s = np.concatenate([[0], np.cumsum(counts[:e])])
        size = sum(pc.plane_stream_lengths(counts[:e], m))
        planes = pc.take_planes(rd, counts[:e], m, scratch("c5-planes", size)[:size])
        rd.done()
        zbytes = (m + 1) * e
        zp = scratch("c5-zp", zbytes)[:zbytes].view(base.dtype)
        zc = scratch("c5-zc", zbytes)[:zbytes].view(base.dtype)
        k.decode(bits, pc.sparse_index(bits.view(bool), m), cls, s, planes, base, u, zp, zc, scratch("c5-ctx", n)[:n])
        return out


def codec(code: int, level: int = 1) -> Codec:
    """The codec registered under ``code``; KeyError if unknown."""
    return Codec.registry[code](level)
