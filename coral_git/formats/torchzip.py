"""PyTorch zip checkpoints (``torch.save`` since 1.6): ``<archive>/data.pkl`` plus one record per storage.

The zip structure is parsed directly from the buffer (zip64 included) so tensor data is never
copied. ``data.pkl`` is read by the safe symbolic pickle reader; each stored (uncompressed)
``<archive>/data/<key>`` record a tensor references becomes one span. Everything else (zip
headers, the pickle, version records, compressed, empty or unreferenced records) is skeleton.

torch 2.13 writes ``_rebuild_tensor_v2`` with legacy storage classes (``torch.FloatStorage`` ...)
for the classic dtypes, and ``_rebuild_tensor_v3`` with ``torch.storage.UntypedStorage`` (numel in
bytes) plus a ``torch.<dtype>`` argument for uint16/32/64, float8, float4, complex32 and bits*.
Records are 64-byte aligned and a zip64 end record is always present.
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from itertools import pairwise

from ..errors import FormatError
from .layout import Layout, TensorSpan
from .pickle_reader import StorageInfo, TensorRef, find_tensors, parse_pickle, unique_name

FORMAT = "torch-zip"
MAX_PICKLE = 512 << 20
MAX_ENTRIES = 1 << 20

_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_LOCATOR64 = b"PK\x06\x07"
_U32 = 0xFFFFFFFF
_PKL_RE = re.compile(r"[^/]+/data\.pkl")


@dataclass(frozen=True, slots=True)
class ZipEntry:
    """One central-directory record."""

    name: str
    raw_name: bytes
    flags: int
    method: int
    crc: int
    csize: int
    usize: int
    header_offset: int


def probe(buf: memoryview) -> bool:
    """True when the file starts with a zip local-file header."""
    return len(buf) >= 4 and bytes(buf[:4]) == _LOCAL


def _unpack(fmt: str, mv: memoryview, pos: int) -> tuple[int, ...]:
    if pos < 0 or pos + struct.calcsize(fmt) > len(mv):
        raise FormatError("zip structure runs past the end of the file")
    return struct.unpack_from(fmt, mv, pos)


def _find_eocd(mv: memoryview) -> int:
    start = max(0, len(mv) - 22 - 0xFFFF)
    tail = bytes(mv[start:])
    pos = tail.rfind(_EOCD)
    while pos >= 0:
        if pos + 22 <= len(tail):
            (clen,) = struct.unpack_from("<H", tail, pos + 20)
            if pos + 22 + clen <= len(tail):
                return start + pos
        pos = tail.rfind(_EOCD, 0, pos)
    raise FormatError("no zip end-of-central-directory record")


def _directory(mv: memoryview) -> tuple[int, int, int]:
    """(entry count, central directory offset, its end) from the (zip64) end record."""
    eocd = _find_eocd(mv)
    _, disk, cd_disk, _, count, cd_size, cd_offset, _ = _unpack("<4s4H2LH", mv, eocd)
    limit = eocd
    if eocd >= 20 and bytes(mv[eocd - 20 : eocd - 16]) == _LOCATOR64:
        _, _, rec64, _ = _unpack("<4sLQL", mv, eocd - 20)
        if bytes(mv[rec64 : rec64 + 4]) != _EOCD64 or rec64 > eocd - 20:
            raise FormatError("zip64 end record missing")
        fields = _unpack("<4sQ2H2L4Q", mv, rec64)
        disk, cd_disk, count, cd_size, cd_offset = fields[4], fields[5], fields[7], fields[8], fields[9]
        limit = rec64
    if disk != 0 or cd_disk != 0:
        raise FormatError("multi-disk zip archives are not supported")
    if count > MAX_ENTRIES or cd_offset + cd_size > limit or count * 46 > cd_size:
        raise FormatError("zip central directory is inconsistent")
    return count, cd_offset, cd_offset + cd_size


def _zip64_extra(extra: bytes, need: list[bool], values: list[int]) -> list[int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, pos)
        body = extra[pos + 4 : pos + 4 + size]
        if tag == 1:
            out, at = list(values), 0
            for i, wanted in enumerate(need):
                if wanted:
                    if at + 8 > len(body):
                        raise FormatError("zip64 extra field too short")
                    (out[i],) = struct.unpack_from("<Q", body, at)
                    at += 8
            return out
        pos += 4 + size
    raise FormatError("zip64 extra field missing")


def _view(buf: memoryview | bytes) -> memoryview:
    mv = memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def entries(buf: memoryview | bytes) -> list[ZipEntry]:
    """Parse the central directory (zip64 aware); raise FormatError if it is malformed."""
    mv = _view(buf)
    count, pos, end = _directory(mv)
    out: list[ZipEntry] = []
    for _ in range(count):
        if pos + 46 > end:
            raise FormatError("zip central directory truncated")
        sig, _, _, flags, method, _, _, crc, csize, usize, nlen, xlen, clen, _, _, _, lho = _unpack(
            "<4s6H3L5HLL", mv, pos
        )
        if sig != _CENTRAL or pos + 46 + nlen + xlen + clen > end:
            raise FormatError("bad zip central directory record")
        raw = bytes(mv[pos + 46 : pos + 46 + nlen])
        values = [usize, csize, lho]
        if _U32 in values:
            need = [v == _U32 for v in values]
            values = _zip64_extra(bytes(mv[pos + 46 + nlen : pos + 46 + nlen + xlen]), need, values)
        name = raw.decode("utf-8" if flags & 0x800 else "cp437", "replace")
        out.append(ZipEntry(name, raw, flags, method, crc, values[1], values[0], values[2]))
        pos += 46 + nlen + xlen + clen
    return out


def _payload(mv: memoryview, e: ZipEntry) -> int:
    """Absolute offset of an entry's data, checked against its local header and the file end."""
    at = e.header_offset
    sig, _, _, method, _, _, _, _, _, nlen, xlen = _unpack("<4s5H3L2H", mv, at)
    start = at + 30 + nlen + xlen
    if sig != _LOCAL or method != e.method or bytes(mv[at + 30 : at + 30 + nlen]) != e.raw_name:
        raise FormatError(f"zip local header of {e.name!r} does not match the central directory")
    if start + e.csize > len(mv):
        raise FormatError(f"zip entry {e.name!r} runs past the end of the file")
    return start


MAX_DEFLATED_PICKLE = 32 * 1024 * 1024


def _read_pickle(mv: memoryview, e: ZipEntry) -> bytes:
    if e.flags & 1:
        raise FormatError("data.pkl is encrypted")
    if e.usize > MAX_PICKLE or e.csize > MAX_PICKLE:
        raise FormatError(f"data.pkl larger than {MAX_PICKLE} bytes")
    start = _payload(mv, e)
    raw = bytes(mv[start : start + e.csize])
    if e.method == 8:
        # torch stores data.pkl uncompressed; a deflated one is only trusted up to a modest size and
        # never inflated past what the directory declares (a zip bomb must not cost memory)
        if e.usize > MAX_DEFLATED_PICKLE:
            raise FormatError(f"deflated data.pkl declares {e.usize} bytes (more than {MAX_DEFLATED_PICKLE})")
        d = zlib.decompressobj(-15)
        try:
            data = d.decompress(raw, e.usize + 1)
        except zlib.error:
            raise FormatError("data.pkl does not inflate") from None
        if not d.eof or d.unconsumed_tail:
            raise FormatError("data.pkl inflates past its size or is truncated")
    elif e.method == 0:
        data = raw
    else:
        raise FormatError(f"data.pkl uses unsupported zip method {e.method}")
    if len(data) != e.usize or zlib.crc32(data) != e.crc:
        raise FormatError("data.pkl size or CRC does not match the zip directory")
    return data


_Parsed = tuple[dict[str, ZipEntry], str, list[TensorRef], dict[str, StorageInfo]]


def _parse(mv: memoryview) -> _Parsed:
    if not probe(mv):
        raise FormatError("not a zip file")
    ents = entries(mv)
    by_name: dict[str, ZipEntry] = {}
    for e in ents:
        if e.name in by_name:
            raise FormatError(f"duplicate zip entry {e.name!r}")
        by_name[e.name] = e
    pkls = [e for e in ents if _PKL_RE.fullmatch(e.name)]
    if len(pkls) != 1:
        raise FormatError("no single <archive>/data.pkl in the zip" if pkls else "no data.pkl in the zip")
    prefix = pkls[0].name[: -len("data.pkl")]
    refs, storages = find_tensors(parse_pickle(_read_pickle(mv, pkls[0])))
    return by_name, prefix, refs, storages


def read_tensor_refs(buf: memoryview | bytes) -> tuple[list[TensorRef], dict[str, StorageInfo]]:
    """The tensors (in pickle order) and storages (by key) a torch zip checkpoint describes."""
    with _view(buf) as mv:
        _, _, refs, storages = _parse(mv)
    return refs, storages


def read(buf: memoryview | bytes) -> Layout:
    """One span per uncompressed storage record a tensor references; raise FormatError if malformed."""
    with _view(buf) as mv:
        return _layout(mv, *_parse(mv))


def _layout(
    mv: memoryview, by_name: dict[str, ZipEntry], prefix: str, _: list[TensorRef], storages: dict[str, StorageInfo]
) -> Layout:
    spans: list[TensorSpan] = []
    used: dict[str, int] = {}
    for key, info in storages.items():
        e = by_name.get(f"{prefix}data/{key}")
        if e is None:
            raise FormatError(f"storage {key!r} has no data record")
        if e.method != 0 or e.flags & 1:
            continue  # compressed or encrypted: stays in the skeleton
        offset = _payload(mv, e)
        if e.csize != e.usize:
            raise FormatError(f"stored record {e.name!r} has differing sizes")
        nbytes = e.csize
        if info.nbytes is None:
            dtype, shape = "U8", (nbytes,)
        elif info.nbytes != nbytes:
            raise FormatError(f"storage {key!r}: record has {nbytes} bytes, the pickle says {info.nbytes}")
        else:
            dtype, shape = info.dtype, (info.numel,)
        name = unique_name(info.first_name or f"storage/{key}", used)
        spans.append(TensorSpan(name, dtype, shape, offset, nbytes))
    spans.sort(key=lambda s: (s.offset, s.end))
    for a, b in pairwise(spans):
        if b.offset < a.end:
            raise FormatError(f"records of {a.name!r} and {b.name!r} overlap")
    return Layout(FORMAT, len(mv), tuple(spans))
