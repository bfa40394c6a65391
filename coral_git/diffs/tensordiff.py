"""Per-tensor diffs of two pointers: statuses and statistics, streamed chunk by chunk.

Unchanged tensors are found from chunk ids alone (no decoding). Changed tensors are decoded one
chunk pair at a time into float64 accumulators, so memory is bounded by chunk size × workers and
16-bit or 8-bit floats never overflow. A chunk whose id is the same on both sides is decoded once
(it only feeds the norms). bf16, fp16 and fp8 are decoded by bit manipulation in numpy.
"""

from __future__ import annotations

import bisect
import fnmatch
import io
import itertools
import math
import struct
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import xxhash

from ..core.chunking import byte_chunks, tensor_chunks
from ..core.pointer import Pointer, TensorEntry
from ..dtypes import DTYPE_BITS, TABLE_DTYPES, fp8_values, itemsize
from ..errors import CoralError, CorruptObjectError

# ---------------------------------------------------------------------------------------------
# Decoding raw bytes to float64
# ---------------------------------------------------------------------------------------------


_LUTS = TABLE_DTYPES  # decoded through a 256-entry table (dtypes.fp8_values)

# dtypes numpy reads directly (complex types as their real components)
_NATIVE: dict[str, str] = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "C128": "<f8", "C64": "<f4", "C32": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2",
    "U8": "u1", "BOOL": "u1", "QI8": "i1", "QU8": "u1", "QI32": "<i4",
}  # fmt: skip


def decodable(dtype: str) -> bool:
    """True when values of ``dtype`` can be decoded to numbers (not sub-byte or unknown dtypes)."""
    return dtype in _NATIVE or dtype in _LUTS or dtype == "BF16"


def to_float64(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Decode little-endian raw bytes (uint8) of ``dtype`` into float64 (complex: one value per component)."""
    if dtype == "BF16":
        bits = raw.view("<u2").astype(np.uint32) << 16
        return bits.view("<f4").astype(np.float64)
    if dtype in _LUTS:
        return fp8_values(dtype)[raw]
    code = _NATIVE.get(dtype)
    if code is None:
        raise ValueError(f"dtype {dtype} has no numeric decoding")
    return raw.view(code).astype(np.float64)


def numpy_dtype(dtype: str) -> np.dtype:
    """The numpy dtype arrays of ``dtype`` are returned as (bf16 and fp8 are widened to float32)."""
    if dtype == "BF16" or dtype in _LUTS:
        return np.dtype("<f4")
    return np.dtype(
        {"BOOL": "?", "C64": "<c8", "C128": "<c16"}.get(dtype, _NATIVE.get(dtype, "u1"))
    )


def to_numpy(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw bytes → a flat numpy array: exact for numpy dtypes, widened to float32 for bf16/fp8."""
    if dtype == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view("<f4")
    if dtype in _LUTS:
        return to_float64(raw, dtype).astype(np.float32)
    if dtype == "C32":
        return raw.view("<f2").astype(np.float32).view("<c8")
    return raw.view(numpy_dtype(dtype))


# ---------------------------------------------------------------------------------------------
# Where chunk bytes come from
# ---------------------------------------------------------------------------------------------


class Source(Protocol):
    """Anything that returns a chunk's verified raw bytes by id (``ChunkStore`` is one)."""

    def get(self, cid: str, context: str = "") -> np.ndarray: ...


class BufferSource:
    """Chunks served from an in-memory (or mmapped) copy of the file, with an optional fallback store.

    ``verify`` re-hashes each served chunk (cheap) and uses the fallback on a mismatch.
    """

    def __init__(self, index: dict[str, np.ndarray], fallback: Source | None = None, verify: bool = False) -> None:
        self.index = index
        self.fallback = fallback
        self.verify = verify

    def get(self, cid: str, context: str = "") -> np.ndarray:
        raw = self.index.get(cid)
        if raw is not None and (not self.verify or xxhash.xxh3_128_hexdigest(raw) == cid):
            return raw
        if self.fallback is None:
            raise CorruptObjectError(cid, "chunk not found in the file being compared", context)
        return self.fallback.get(cid, context)


class _HashOnly:
    """Stands in for a ChunkStore during clean: records where each chunk is, writes nothing."""

    def __init__(self) -> None:
        self.index: dict[str, np.ndarray] = {}

    def put(self, raw: np.ndarray, itemsize: int, base: str | None = None, cid: str | None = None) -> bool:
        self.index[cid or xxhash.xxh3_128_hexdigest(raw)] = raw
        return False

    def has(self, cid: str) -> bool:
        return cid in self.index

    def sync(self) -> int:
        return 0  # nothing written, nothing to flush

    def begin_pack(self, size: int) -> bool:
        return False  # nothing is written, so no pack either

    def abort_pack(self) -> None:
        pass


def hash_pointer(data: memoryview | bytes, chunk_bytes: int, *, workers: int = 2) -> tuple[Pointer, BufferSource]:
    """The pointer ``clean`` would give ``data``, computed by hashing only (nothing is stored).

    The returned source serves every chunk of that pointer from ``data`` itself (views, no copies).
    """
    from ..filter.clean import clean

    rec = _HashOnly()
    res = clean(data, rec, chunk_bytes=chunk_bytes, workers=workers)  # type: ignore[arg-type]
    return res.pointer, BufferSource(rec.index)


def file_source(p: Pointer, buf: np.ndarray, fallback: Source | None) -> BufferSource:
    """Serve the tensor chunks of ``p`` from ``buf``, the file ``p`` names (e.g. git's smudged temp file).

    Each chunk is verified against its id when served; a mismatch falls back to the store.
    """
    index: dict[str, np.ndarray] = {}
    if buf.size == p.size:
        for t in p.tensors:
            ranges = entry_ranges(t, p.chunk_bytes)
            if ranges is None:
                continue
            for cid, (s, e) in zip(t.chunks, ranges, strict=True):
                index[cid] = buf[t.offset + s : t.offset + e]
    return BufferSource(index, fallback, verify=True)


def entry_ranges(t: TensorEntry, chunk_bytes: int) -> list[tuple[int, int]] | None:
    """Byte ranges of the chunks of ``t`` (relative to its first byte), or None if they do not match."""
    ranges = tensor_chunks(t.dtype, t.shape, t.nbytes, chunk_bytes)
    return ranges if len(ranges) == len(t.chunks) else None


def skeleton_entry(p: Pointer) -> TensorEntry:
    """The skeleton as a pseudo tensor of bytes (for byte-level summaries)."""
    return TensorEntry("(skeleton)", "U8", (p.skeleton_nbytes,), 0, p.skeleton_nbytes, p.skeleton)


# ---------------------------------------------------------------------------------------------
# Tensors as views of pointer entries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    """A named tensor: ``nbytes`` bytes from byte ``start`` of ``entry``, read as ``dtype``/``shape``.

    For safetensors a view is a whole entry; a torch tensor may be part of a storage entry, and
    ``strides`` (in elements) is set when it is not C-contiguous.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    entry: TensorEntry
    start: int
    nbytes: int
    chunk_bytes: int
    strides: tuple[int, ...] | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def pieces(self) -> list[tuple[str, int, int, int]]:
        """``(chunk id, offset of the piece in the chunk, start, end)`` in view coordinates, in order."""
        ranges = entry_ranges(self.entry, self.chunk_bytes)
        if ranges is None:
            raise CorruptObjectError(self.entry.chunks[0] if self.entry.chunks else "-", "chunk boundaries do not match the pointer", self.name)
        out = []
        lo, hi = self.start, self.start + self.nbytes
        for cid, (s, e) in zip(self.entry.chunks, ranges, strict=True):
            if e <= lo or s >= hi:
                continue
            a, b = max(s, lo), min(e, hi)
            out.append((cid, a - s, a - lo, b - lo))
        return out

    def signature(self) -> tuple[Any, ...]:
        """Identity of the content (dtype, shape, layout and chunk ids): equal signatures, equal bytes."""
        if self.start == 0 and self.nbytes == self.entry.nbytes:
            ids: tuple[Any, ...] = self.entry.chunks
        else:
            ids = tuple(self.pieces())
        return (self.dtype, self.shape, self.strides, self.nbytes, ids)


def views(p: Pointer, source: Source | None = None) -> dict[str, View]:
    """The named tensors of a pointer: its entries, or for torch checkpoints the pickled tensors."""
    if source is not None and p.format == "torch-zip":
        got = torch_views(p, source)
        if got is not None:
            return got
    return {t.name: View(t.name, t.dtype, t.shape, t, 0, t.nbytes, p.chunk_bytes) for t in p.tensors}


class VirtualFile(io.RawIOBase):
    """The file a pointer names, readable and seekable, decoding only the chunks that reads touch."""

    def __init__(self, p: Pointer, src: Source) -> None:
        self.p, self.src, self.pos = p, src, 0
        # file ranges: (file start, file end, entry, start inside the entry)
        self.parts: list[tuple[int, int, TensorEntry, int]] = []
        skel, fpos, spos = skeleton_entry(p), 0, 0
        for t in p.tensors:
            if t.offset > fpos:
                self.parts.append((fpos, t.offset, skel, spos))
                spos += t.offset - fpos
            if t.nbytes:
                self.parts.append((t.offset, t.end, t, 0))
            fpos = t.end
        if fpos < p.size:
            self.parts.append((fpos, p.size, skel, spos))
        self.starts = [q[0] for q in self.parts]
        self.cache: dict[str, np.ndarray] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.p.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        n = 0
        while n < len(mv) and self.pos < self.p.size:
            k = bisect.bisect_right(self.starts, self.pos) - 1
            fs, fe, entry, es = self.parts[k]
            ranges = entry_ranges(entry, self.p.chunk_bytes)
            if ranges is None:
                raise CorruptObjectError(entry.chunks[0] if entry.chunks else "-", "chunk boundaries do not match", entry.name)
            at = es + self.pos - fs
            ci = bisect.bisect_right([r[0] for r in ranges], at) - 1
            cid = entry.chunks[ci]
            raw = self.cache.get(cid)
            if raw is None:
                if len(self.cache) > 8:
                    self.cache.clear()
                raw = self.cache[cid] = self.src.get(cid, entry.name)
            off = at - ranges[ci][0]
            take = min(len(mv) - n, raw.size - off, fe - self.pos)
            mv[n : n + take] = raw[off : off + take].tobytes()
            n += take
            self.pos += take
        return n


def torch_views(p: Pointer, src: Source) -> dict[str, View] | None:
    """Tensors of a torch zip checkpoint as views of its storage entries (None if it is not one).

    The pickle is read from the skeleton with the safe symbolic reader (never executed); each
    storage is matched to the pointer entry that starts where the zip member ``data/<key>`` starts.
    """
    from ..formats import pickle_reader

    try:
        zf = zipfile.ZipFile(VirtualFile(p, src))
        names = zf.namelist()
        pkl = next((n for n in names if n.endswith("data.pkl") and n.count("/") == 1), None)
        if pkl is None:
            return None
        root = pkl.rsplit("/", 1)[0]
        refs, _ = pickle_reader.find_tensors(pickle_reader.parse_pickle(zf.read(pkl)))
        by_offset = {t.offset: t for t in p.tensors}
        out: dict[str, View] = {}
        for r in refs:
            info = zf.getinfo(f"{root}/data/{r.storage_key}")
            data_at = _member_data_offset(zf, info)
            entry = by_offset.get(data_at)
            if entry is None or r.dtype not in DTYPE_BITS or DTYPE_BITS[r.dtype] % 8:
                return None
            elem = DTYPE_BITS[r.dtype] // 8
            numel = math.prod(r.shape)
            contiguous = r.stride == _c_strides(r.shape) or numel <= 1
            extent = (1 + sum((d - 1) * s for d, s in zip(r.shape, r.stride, strict=True))) if numel else 0
            if (r.storage_offset + extent) * elem > entry.nbytes:
                return None
            out[r.name] = View(
                r.name, r.dtype, r.shape, entry, r.storage_offset * elem, numel * elem, p.chunk_bytes,
                None if contiguous else r.stride,
            )  # fmt: skip
        return out
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, CoralError):
        return None


def _member_data_offset(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    fp = zf.fp
    assert fp is not None
    fp.seek(info.header_offset)
    head = fp.read(30)
    if head[:4] != b"PK\x03\x04":
        raise ValueError("bad local header")
    n, m = struct.unpack("<HH", head[26:30])
    return info.header_offset + 30 + n + m


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


# ---------------------------------------------------------------------------------------------
# Streaming chunk pairs
# ---------------------------------------------------------------------------------------------


class _Prefetch:
    """Run ``jobs`` (key, thunk) on a pool in order, at most ``window`` ahead of the consumer."""

    def __init__(self, pool: ThreadPoolExecutor, jobs: list[tuple[Any, Callable[[], np.ndarray]]], window: int) -> None:
        self.pool, self.jobs, self.window = pool, jobs, max(1, window)
        self.next = 0
        self.pending: dict[Any, Future[np.ndarray]] = {}
        self._fill()

    def _fill(self) -> None:
        while self.next < len(self.jobs) and len(self.pending) < self.window:
            key, fn = self.jobs[self.next]
            self.pending[key] = self.pool.submit(fn)
            self.next += 1

    def take(self, key: Any) -> np.ndarray:
        fut = self.pending.pop(key)
        self._fill()
        return fut.result()


def paired_segments(
    old: View, new: View, old_src: Source, new_src: Source, pool: ThreadPoolExecutor, window: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Aligned byte segments ``(old, new)`` of two views of equal length; ``new`` is None when the
    segment comes from the same chunk at the same place on both sides (identical bytes, decoded once)."""
    po, pn = old.pieces(), new.pieces()
    bounds = sorted({b for p in po for b in (p[2], p[3])} | {b for p in pn for b in (p[2], p[3])})
    segs: list[tuple[int, int, int, int, bool]] = []  # (a, b, old piece, new piece, same)
    i = j = 0
    for a, b in itertools.pairwise(bounds):
        while po[i][3] <= a:
            i += 1
        while pn[j][3] <= a:
            j += 1
        same = po[i][0] == pn[j][0] and po[i][1] - po[i][2] == pn[j][1] - pn[j][2]
        segs.append((a, b, i, j, same))
    jobs: list[tuple[Any, Callable[[], np.ndarray]]] = []
    seen: set[tuple[str, int]] = set()
    for _, _, i, j, same in segs:
        want = [("n", j)] if same else [("o", i), ("n", j)]
        for key in want:
            if key not in seen:
                seen.add(key)
                src, piece, view = (old_src, po[key[1]], old) if key[0] == "o" else (new_src, pn[key[1]], new)
                jobs.append((key, _getter(src, piece[0], f"tensor {view.name}")))
    pre = _Prefetch(pool, jobs, window)
    held: dict[tuple[str, int], np.ndarray] = {}
    last_use: dict[tuple[str, int], int] = {}
    for k, (_, _, i, j, same) in enumerate(segs):
        last_use[("n", j)] = k
        if not same:
            last_use[("o", i)] = k
    for k, (a, b, i, j, same) in enumerate(segs):
        keys = [("n", j)] if same else [("o", i), ("n", j)]
        for key in keys:
            if key not in held:
                held[key] = pre.take(key)
        nj = held[("n", j)]
        pnj = pn[j]
        nseg = nj[pnj[1] + (a - pnj[2]) : pnj[1] + (b - pnj[2])]
        if same:
            yield nseg, None
        else:
            oi, poi = held[("o", i)], po[i]
            yield oi[poi[1] + (a - poi[2]) : poi[1] + (b - poi[2])], nseg
        for key in keys:
            if last_use[key] == k:
                del held[key]


def _getter(src: Source, cid: str, context: str) -> Callable[[], np.ndarray]:
    return lambda: src.get(cid, context)


def view_segments(v: View, src: Source, pool: ThreadPoolExecutor, window: int) -> Iterator[np.ndarray]:
    """The bytes of a contiguous view, segment by segment, decoded ahead on ``pool``."""
    pieces = v.pieces()
    pre = _Prefetch(pool, [(k, _getter(src, p[0], f"tensor {v.name}")) for k, p in enumerate(pieces)], window)
    for k, (_, off, a, b) in enumerate(pieces):
        raw = pre.take(k)
        yield raw[off : off + (b - a)]


def read_view(v: View, src: Source, pool: ThreadPoolExecutor | None = None, window: int = 4) -> np.ndarray:
    """All raw bytes of a view (C-order, contiguous copy) as uint8."""
    own = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=2)
    try:
        if v.strides is None:
            out = np.empty(v.nbytes, dtype=np.uint8)
            pos = 0
            for seg in view_segments(v, src, pool, window):
                out[pos : pos + seg.size] = seg
                pos += seg.size
            return out
        # a strided view: read its whole extent of the storage, then gather
        whole = View(v.name, v.dtype, (v.entry.nbytes,), v.entry, 0, v.entry.nbytes, v.chunk_bytes)
        storage = read_view(whole, src, pool, window)
        elem = max(1, DTYPE_BITS.get(v.dtype, 8) // 8)
        base = storage[v.start :]
        arr = np.lib.stride_tricks.as_strided(
            base.view(f"V{elem}")[: max(0, base.size // elem)], v.shape, tuple(s * elem for s in v.strides)
        )
        return np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
    finally:
        if own:
            pool.shutdown()


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------


class _Carry:
    """Cut a byte stream at element boundaries (chunk edges need not be element-aligned)."""

    def __init__(self, elem: int) -> None:
        self.elem = elem
        self.rest = np.empty(0, np.uint8)

    def feed(self, seg: np.ndarray) -> np.ndarray:
        if self.rest.size:
            seg = np.concatenate([self.rest, seg])
        cut = seg.size - seg.size % self.elem
        self.rest = seg[cut:].copy() if cut < seg.size else np.empty(0, np.uint8)
        return seg[:cut]


@dataclass
class PairStats:
    """float64 accumulators over element pairs (old, new)."""

    n: int = 0
    changed: int = 0
    sq_old: float = 0.0
    sq_new: float = 0.0
    dot: float = 0.0
    sq_delta: float = 0.0
    max_abs: float = 0.0

    def add_same(self, x: np.ndarray) -> None:
        s = _dot(x, x)
        self.n += x.size
        self.sq_old += s
        self.sq_new += s
        self.dot += s

    def add(self, a: np.ndarray, b: np.ndarray, differ: np.ndarray) -> None:
        self.n += a.size
        self.sq_old += _dot(a, a)
        self.sq_new += _dot(b, b)
        self.dot += _dot(a, b)
        k = int(np.count_nonzero(differ))
        if not k:
            return
        self.changed += k
        if 4 * k > a.size:
            d = b - a  # identical bits subtract to 0, except inf/nan: masked below when present
            sq = _dot(d, d)
            if not math.isfinite(sq):
                d = np.where(differ, d, 0.0)
                sq = _dot(d, d)
        else:
            d = b[differ] - a[differ]
            sq = _dot(d, d)
        self.sq_delta += sq
        m = max(float(d.max()), -float(d.min()))
        if m > self.max_abs or math.isnan(m):
            self.max_abs = m


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """float64 dot product without BLAS (BLAS threads thrash on busy machines for vectors this size)."""
    return float(np.einsum("i,i->", a, b))


def _uint(elem: int) -> str:
    return {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}.get(elem, "u1")


def pair_stats(old: View, new: View, old_src: Source, new_src: Source, pool: ThreadPoolExecutor, window: int) -> PairStats:
    """Statistics of ``new - old`` for two views of equal element count, streamed chunk by chunk."""
    st = PairStats()
    with np.errstate(all="ignore"):
        if old.dtype == new.dtype and old.nbytes == new.nbytes and old.strides is None and new.strides is None:
            elem = max(1, DTYPE_BITS.get(old.dtype, 8) // 8)
            comps = max(1, elem // itemsize(old.dtype)) if old.dtype.startswith("C") else 1
            co, cn = _Carry(elem), _Carry(elem)
            for a, b in paired_segments(old, new, old_src, new_src, pool, window):
                if b is None:
                    x = co.feed(a)
                    cn.feed(a)
                    st.add_same(to_float64(x, old.dtype))
                    continue
                a, b = co.feed(a), cn.feed(b)
                differ = a.view(_uint(elem)) != b.view(_uint(elem))
                if comps > 1:
                    differ = np.repeat(differ, comps)
                st.add(to_float64(a, old.dtype), to_float64(b, new.dtype), differ)
            return st
        # different dtypes or strided views: decode each side whole (bounded by the tensor's size)
        a = to_float64(read_view(old, old_src, pool, window), old.dtype)
        b = to_float64(read_view(new, new_src, pool, window), new.dtype)
        if a.size == b.size:
            st.add(a, b, ~((a == b) | (np.isnan(a) & np.isnan(b))))
    return st


@dataclass
class ValueStats:
    """Summary of one tensor's values (float64 accumulation)."""

    n: int = 0
    total: float = 0.0
    sq: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf
    zeros: int = 0
    nonfinite: int = 0

    def add(self, x: np.ndarray) -> None:
        if not x.size:
            return
        with np.errstate(all="ignore"):
            fin = np.isfinite(x)
            bad = x.size - int(np.count_nonzero(fin))
            if bad:
                self.nonfinite += bad
                x = x[fin]
            self.n += x.size
            if not x.size:
                return
            self.total += float(x.sum())
            self.sq += _dot(x, x)
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))
            self.zeros += x.size - int(np.count_nonzero(x))

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        if not self.n:
            return math.nan
        return math.sqrt(max(0.0, self.sq / self.n - self.mean**2))

    @property
    def rms(self) -> float:
        return math.sqrt(self.sq / self.n) if self.n else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": _num(self.mean), "std": _num(self.std), "min": _num(self.lo if self.n else math.nan),
            "max": _num(self.hi if self.n else math.nan), "rms": _num(self.rms),
            "zeros": self.zeros, "nonfinite": self.nonfinite,
        }  # fmt: skip


def value_stats(v: View, src: Source, pool: ThreadPoolExecutor, window: int = 4) -> ValueStats | None:
    """Value statistics of a view, streamed chunk by chunk; None for dtypes that are not numbers."""
    if not decodable(v.dtype):
        return None
    st = ValueStats()
    if v.strides is not None:
        st.add(to_float64(read_view(v, src, pool, window), v.dtype))
        return st
    carry = _Carry(max(1, DTYPE_BITS.get(v.dtype, 8) // 8))
    for seg in view_segments(v, src, pool, window):
        st.add(to_float64(carry.feed(seg), v.dtype))
    return st


def content_id(v: View) -> str:
    """A short, stable id of a tensor's content (from its chunk ids, no decoding)."""
    return xxhash.xxh3_64_hexdigest(repr(v.signature()).encode())[:12]


def _num(x: float | None) -> float | None:
    if x is None or math.isnan(x):
        return None
    return x


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------

ADDED, REMOVED, MODIFIED, RENAMED, RESHAPED, RETYPED = "added", "removed", "modified", "renamed", "reshaped", "retyped"


@dataclass
class TensorDiff:
    """How one tensor differs between two versions of a file."""

    name: str
    status: str
    old_name: str | None = None
    old_dtype: str | None = None
    new_dtype: str | None = None
    old_shape: tuple[int, ...] | None = None
    new_shape: tuple[int, ...] | None = None
    numel: int = 0  # elements of the new version (old, for a removed tensor)
    chunks_changed: int = 0
    chunks_total: int = 0
    bytes_changed: int = 0  # bytes in chunks of the new version that the old version does not have
    delta_norm: float | None = None  # ‖new - old‖₂
    rel_change: float | None = None  # ‖new - old‖₂ / ‖old‖₂
    max_abs: float | None = None  # max |new - old|
    frac_changed: float | None = None  # fraction of elements whose bits changed
    cosine: float | None = None
    changed_elements: int | None = None
    old_norm: float | None = None
    new_norm: float | None = None

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for k in ("old_shape", "new_shape"):
            if d[k] is not None:
                d[k] = list(d[k])
        for k in ("delta_norm", "rel_change", "max_abs", "frac_changed", "cosine", "old_norm", "new_norm"):
            d[k] = _json_float(d[k])
        return d


def _json_float(x: float | None) -> float | str | None:
    if x is None:
        return None
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return x


@dataclass
class ByteSummary:
    """Byte-level summary for files coral cannot read as tensors."""

    old_size: int
    new_size: int
    chunks_total: int
    chunks_changed: int
    bytes_changed: int  # bytes in new chunks the old version does not have
    differing_bytes: int | None = None  # bytes that differ at the same offset (same size only)


@dataclass
class FileDiff:
    """Every difference between two versions of one model file."""

    path: str
    old_format: str | None
    new_format: str | None
    old_size: int
    new_size: int
    tensors: list[TensorDiff] = field(default_factory=list)
    unchanged: int = 0
    tensors_total: int = 0  # tensors in the new version
    params_total: int = 0  # elements in the new version
    params_changed: int = 0  # elements that differ (or belong to added/reshaped/retyped tensors)
    bytes_changed: int = 0  # bytes of the new version in chunks the old version does not have
    metadata_changed: bool = False  # bytes outside tensors (headers, pickles) differ
    bytes: ByteSummary | None = None  # set instead of ``tensors`` for opaque files

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("tensors", "bytes")}
        d["tensors"] = [t.as_dict() for t in self.tensors]
        d["bytes"] = None if self.bytes is None else dict(self.bytes.__dict__)
        return d


@dataclass
class Side:
    """One version of a file: its pointer (None when the file does not exist) and where chunks come from."""

    pointer: Pointer | None
    source: Source | None


def _sort_key(order: str) -> Callable[[TensorDiff], Any]:
    if order == "name":
        return lambda t: t.name
    rank = {REMOVED: 0, ADDED: 1, RETYPED: 2, RESHAPED: 3, MODIFIED: 4, RENAMED: 5}
    return lambda t: (rank.get(t.status, 9) if t.rel_change is None else 4, -(t.rel_change or 0.0), t.name)


def diff_files(
    path: str,
    old: Side,
    new: Side,
    *,
    stats: bool = True,
    tensors: Iterable[str] | None = None,
    order: str = "change",
    workers: int = 2,
) -> FileDiff:
    """Compare two versions of a file. ``tensors`` are glob patterns that select tensor names."""
    po, pn = old.pointer, new.pointer
    fd = FileDiff(path, po.format if po else None, pn.format if pn else None, po.size if po else 0, pn.size if pn else 0)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        window = 2 * max(1, workers)
        if (po and po.format == "opaque") or (pn and pn.format == "opaque"):
            fd.bytes = _byte_summary(old, new, stats, pool, window)
            fd.bytes_changed = fd.bytes.bytes_changed
            fd.params_total = 0
            return fd
        vo = views(po, old.source) if po else {}
        vn = views(pn, new.source) if pn else {}
        fd.metadata_changed = bool(po and pn and (po.skeleton != pn.skeleton))
        pats = list(tensors or [])

        def wanted(name: str) -> bool:
            return not pats or any(fnmatch.fnmatchcase(name, p) for p in pats)

        old_ids = po.chunk_ids() if po else set()
        fd.params_total = sum(v.numel for n, v in vn.items() if wanted(n))
        removed = {n: v for n, v in vo.items() if n not in vn and wanted(n)}
        added = {n: v for n, v in vn.items() if n not in vo and wanted(n)}
        by_sig: dict[tuple[Any, ...], list[str]] = {}
        for n, v in removed.items():
            # equal bytes make a rename only when the bytes say something: two all-ones layer norms
            # are an added and a removed tensor, not a rename
            if v.nbytes and n and not _constant(v, old.source):
                by_sig.setdefault(v.signature(), []).append(n)
        out: list[TensorDiff] = []
        for n, v in added.items():
            olds = by_sig.get(v.signature()) if v.nbytes else None
            if olds:
                on = olds.pop(0)
                del removed[on]
                out.append(TensorDiff(n, RENAMED, on, v.dtype, v.dtype, v.shape, v.shape, v.numel, 0, len(v.pieces()), 0))
                continue
            pieces = v.pieces()
            new_bytes = sum(b - a for cid, _, a, b in pieces if cid not in old_ids)
            out.append(TensorDiff(n, ADDED, None, None, v.dtype, None, v.shape, v.numel, len(pieces), len(pieces), new_bytes))
            fd.params_changed += v.numel
        for n, v in removed.items():
            out.append(TensorDiff(n, REMOVED, None, v.dtype, None, v.shape, None, v.numel, 0, 0, 0))
        for n, b in vn.items():
            a = vo.get(n)
            if a is None or not wanted(n):
                continue
            if a.signature() == b.signature():
                fd.unchanged += 1
                continue
            rec = _changed(n, a, b, old, new, old_ids, stats, pool, window)
            if rec.status == MODIFIED and rec.changed_elements == 0:
                fd.unchanged += 1  # other chunk boundaries (chunk size changed), same bytes
                continue
            fd.params_changed += rec.changed_elements if rec.changed_elements is not None else rec.numel
            out.append(rec)
        out.sort(key=_sort_key(order))
        fd.tensors_total = sum(1 for n in vn if wanted(n)) + len(removed)  # every tensor of either side, once
        fd.tensors = out
        fd.bytes_changed = sum(t.bytes_changed for t in out)
        return fd


def _constant(v: View, src: Source) -> bool:
    """True when every element of ``v`` has the same bit pattern (reads at most two chunks)."""
    pieces = v.pieces()
    if not pieces or len({cid for cid, *_ in pieces[:-1]}) > 1:
        return False
    elem = max(1, (DTYPE_BITS.get(v.dtype) or 8) // 8)
    try:
        for cid, at, a, b in (pieces[0], pieces[-1]):
            raw = src.get(cid, v.name)[at : at + (b - a)]
            if raw.size % elem or raw.size < elem:
                return False
            if (raw.reshape(-1, elem) != raw[:elem]).any():
                return False
        first = src.get(pieces[0][0], v.name)[pieces[0][1] : pieces[0][1] + elem]
        last_cid, last_at = pieces[-1][0], pieces[-1][1]
        return bool((src.get(last_cid, v.name)[last_at : last_at + elem] == first).all())
    except CoralError:
        return False


def _changed(
    name: str, a: View, b: View, old: Side, new: Side, old_ids: set[str], stats: bool, pool: ThreadPoolExecutor, window: int
) -> TensorDiff:
    if a.dtype != b.dtype:
        status = RETYPED
    elif a.shape != b.shape:
        status = RESHAPED
    else:
        status = MODIFIED
    pieces = b.pieces()
    opieces = {(p[0], p[1] - p[2]) for p in a.pieces()} if status == MODIFIED else set()
    changed = [p for p in pieces if (p[0], p[1] - p[2]) not in opieces]
    rec = TensorDiff(
        name, status, None, a.dtype, b.dtype, a.shape, b.shape, b.numel, len(changed), len(pieces),
        sum(q - p for cid, _, p, q in changed if cid not in old_ids),
    )  # fmt: skip
    if not stats or a.numel != b.numel or not (decodable(a.dtype) and decodable(b.dtype)):
        return rec
    assert old.source is not None and new.source is not None
    st = pair_stats(a, b, old.source, new.source, pool, window)
    comps = st.n or 1
    rec.old_norm = math.sqrt(st.sq_old)
    rec.new_norm = math.sqrt(st.sq_new)
    rec.delta_norm = math.sqrt(st.sq_delta)
    rec.rel_change = rec.delta_norm / rec.old_norm if rec.old_norm else (math.inf if rec.delta_norm else 0.0)
    rec.max_abs = st.max_abs
    per_elem = max(1, comps // max(1, b.numel))  # complex: counted per component
    rec.changed_elements = st.changed // per_elem
    rec.frac_changed = st.changed / comps
    denom = rec.old_norm * rec.new_norm
    rec.cosine = st.dot / denom if denom else (1.0 if rec.old_norm == rec.new_norm else 0.0)
    return rec


def _walk_differing(old_ids: tuple[str, ...], new_ids: tuple[str, ...], old_src: Source, new_src: Source) -> int:
    """Bytes that differ at the same offset of two chunk sequences of equal total size (any cuts).

    Content-defined chunks have no fixed size, so both sides are walked in order; where both start a
    chunk at the same offset with the same id the chunk is skipped undecoded.
    """
    n = oi = ni = 0
    empty = np.empty(0, dtype=np.uint8)
    a, b = empty, empty
    while True:
        if a.size == 0 and b.size == 0 and oi < len(old_ids) and ni < len(new_ids) and old_ids[oi] == new_ids[ni]:
            oi, ni = oi + 1, ni + 1
            continue
        if a.size == 0:
            if oi == len(old_ids):
                return n
            a, oi = old_src.get(old_ids[oi], "skeleton"), oi + 1
            continue
        if b.size == 0:
            if ni == len(new_ids):
                return n
            b, ni = new_src.get(new_ids[ni], "skeleton"), ni + 1
            continue
        k = min(a.size, b.size)
        n += int(np.count_nonzero(a[:k] != b[:k]))
        a, b = a[k:], b[k:]


def _byte_summary(old: Side, new: Side, stats: bool, pool: ThreadPoolExecutor, window: int) -> ByteSummary:
    po, pn = old.pointer, new.pointer
    new_ids = list(pn.skeleton) + [c for t in pn.tensors for c in t.chunks] if pn else []
    old_set = po.chunk_ids() if po else set()
    ranges_new = byte_chunks(pn.skeleton_nbytes, pn.chunk_bytes) if pn else []
    changed = [i for i, c in enumerate(pn.skeleton) if c not in old_set] if pn else []
    if pn and pn.cdc is not None:  # content-defined cuts: a chunk's size is known only from its bytes
        sizes = [new.source.get(pn.skeleton[i]).size if new.source else 0 for i in changed]
    else:
        sizes = [ranges_new[i][1] - ranges_new[i][0] for i in changed if i < len(ranges_new)]
    s = ByteSummary(
        po.size if po else 0, pn.size if pn else 0, len(new_ids), sum(1 for c in new_ids if c not in old_set), sum(sizes)
    )
    fixed = po is not None and pn is not None and po.cdc is None and pn.cdc is None
    if stats and po and pn and not fixed and po.size == pn.size and not po.tensors and not pn.tensors and old.source and new.source:
        s.differing_bytes = _walk_differing(po.skeleton, pn.skeleton, old.source, new.source)
    elif stats and fixed and po.size == pn.size and not po.tensors and not pn.tensors and old.source and new.source:
        a = View("(bytes)", "U8", (po.size,), skeleton_entry(po), 0, po.size, po.chunk_bytes)
        b = View("(bytes)", "U8", (pn.size,), skeleton_entry(pn), 0, pn.size, pn.chunk_bytes)
        if entry_ranges(a.entry, po.chunk_bytes) is not None and entry_ranges(b.entry, pn.chunk_bytes) is not None:
            n = 0
            for x, y in paired_segments(a, b, old.source, new.source, pool, window):
                if y is not None:
                    n += int(np.count_nonzero(x != y))
            s.differing_bytes = n
    return s
