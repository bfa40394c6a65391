"""Packs on the wire: stored objects travel in content-addressed packs of up to ~64 MiB, each with an index.

A wire pack is a local pack file byte for byte (``coral_git/store/packs.py``, written by its
``write_pack``, with every mtime 0 so the same objects in the same order give the same bytes): a fully
downloaded pack can go into ``coral/packs/`` as it is, and a retried push produces the same oid. Its
name is the sha256 of its bytes, so it is a valid Git LFS oid.

Beside each pack travels a small **wire index** (also an LFS object, named by its own sha256), so a
fetch can plan which packs and byte ranges it needs — and the delta chains behind them — without
reading any pack. All integers little-endian:

    header   64 bytes: magic "CRWX", version u32 (=1), count u64, pack size u64, pack sha256 (32 bytes),
             8 zero bytes
    entries  count × 56 bytes, sorted by id: id (16), offset u64, length u64, xxh3-64 of the stored
             bytes u64, delta base id (16; all zero for a keyframe)

``offset``/``length`` locate the stored object (32-byte object header + payload) inside the pack.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import secrets
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import xxhash

from ..errors import CorruptObjectError, StoreError
from ..store.chains import cut_by_size
from ..store.objects import HEADER_SIZE, unpack_header
from ..store.packs import Pack, PackItem, write_pack

MAGIC = b"CRWX"
VERSION = 1
HEADER = struct.Struct("<4sIQQ32s8x")
ENTRY = struct.Struct("<16sQQQ16s")
NO_BASE = bytes(16)
DEFAULT_PACK_BYTES = 64 << 20  # Xet's xorbs are 64 MiB: big enough to cut requests, small enough to retry

RangeReader = Callable[[int, int], bytes]  # (offset, length) -> exactly those bytes of the pack


@dataclass(frozen=True, slots=True)
class WireEntry:
    """Where one stored object lies in a wire pack, and which object it is a delta against."""

    cid: str
    offset: int
    length: int
    checksum: int
    base: str | None


@dataclass(frozen=True)
class WireIndex:
    """A parsed wire index: the pack it describes and its entries, sorted by id."""

    pack_oid: str
    pack_size: int
    entries: tuple[WireEntry, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", [e.cid for e in self.entries])

    def find(self, cid: str) -> WireEntry | None:
        ids = self._ids  # type: ignore[attr-defined]
        i = bisect.bisect_left(ids, cid)
        return self.entries[i] if i < len(ids) and ids[i] == cid else None

    def __iter__(self) -> Iterator[WireEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


@dataclass(frozen=True)
class WirePack:
    """A pack and its index written to disk, named (and LFS-addressed) by their sha256."""

    path: Path
    oid: str
    size: int
    index_path: Path
    index_oid: str
    index_size: int
    count: int


# -- building ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class WireItem:
    """An object to send: its id, its stored size (known from the store's inventory, so packs can be
    planned before any byte is read) and how to read its stored bytes (header + payload)."""

    cid: str
    length: int
    read: Callable[[], bytes]


def cut(items: Iterable[WireItem], max_bytes: int = DEFAULT_PACK_BYTES) -> Iterator[list[WireItem]]:
    """Group objects, in the order given, into batches of at most ``max_bytes`` stored bytes (an object
    bigger than that gets a batch of its own); an id given twice goes in once. Every remote kind cuts
    its packs here, so a delta never lands in an earlier pack than its base when bases come first."""
    seen: set[str] = set()

    def first(it: WireItem) -> bool:
        new = it.cid not in seen
        seen.add(it.cid)
        return new

    yield from cut_by_size((it for it in items if first(it)), lambda it: it.length, max_bytes)


def build_packs(
    items: Iterable[WireItem], workdir: Path, max_bytes: int = DEFAULT_PACK_BYTES, mtime: int = 0
) -> Iterator[WirePack]:
    """Group objects into packs of at most ``max_bytes`` (see ``cut``) and write each with its index
    under ``workdir``; yield them as they are done.

    The bytes are taken as the local store holds them, never re-encoded. Objects are read one at a time
    while the pack file is written, so memory holds one object, not a pack. ``mtime`` is what the pack
    records per object: 0 (the default) makes the bytes depend on the objects alone.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    for batch in cut(items, max_bytes):
        yield _write(batch, workdir, mtime)


def _write(batch: list[WireItem], workdir: Path, mtime: int = 0) -> WirePack:
    bases: dict[str, str | None] = {}

    def reader(it: WireItem) -> Callable[[], bytes]:
        def read() -> bytes:
            data = it.read()
            if len(data) != it.length:
                raise StoreError(f"internal error: object {it.cid} has {len(data)} stored bytes, not {it.length}")
            bases[it.cid] = unpack_header(it.cid, data[:HEADER_SIZE]).base
            return data

        return read

    tmp = Path(tempfile.mkdtemp(prefix=".wirepack-", dir=workdir))
    try:
        # mtime 0: the same objects in the same order give the same bytes, so a retried push has the same oid
        local = write_pack(tmp, [PackItem(it.cid, mtime, reader(it)) for it in batch])
        assert local is not None
        oid, size = _sha256_file(local)
        pack_path = workdir / f"{oid}.pack"
        os.replace(local, pack_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    index = index_bytes(pack_path, oid, size, bases)
    index_oid = hashlib.sha256(index).hexdigest()
    index_path = workdir / f"{index_oid}.idx"
    _write_atomic(index_path, index)
    return WirePack(pack_path, oid, size, index_path, index_oid, len(index), len(batch))


def index_bytes(pack_path: Path, pack_oid: str, pack_size: int, bases: dict[str, str | None] | None = None) -> bytes:
    """The wire index of a local-format pack file (bases read from the object headers when not given)."""
    pack = Pack(pack_path)
    try:
        rows = []
        for e in pack.iter_entries():  # already sorted by id
            if bases is not None and e.cid in bases:
                base = bases[e.cid]
            else:
                base = unpack_header(e.cid, pack.read_header(e)).base
            rows.append(ENTRY.pack(bytes.fromhex(e.cid), e.offset, e.length, e.checksum, bytes.fromhex(base) if base else NO_BASE))
        head = HEADER.pack(MAGIC, VERSION, len(rows), pack_size, bytes.fromhex(pack_oid))
        return head + b"".join(rows)
    finally:
        pack.close()


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            n += len(block)
    return h.hexdigest(), n


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{secrets.token_hex(6)}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# -- reading -----------------------------------------------------------------------------------------
def parse_index(data: bytes, oid: str | None = None) -> WireIndex:
    """Parse (and, given its oid, authenticate) a wire index; StoreError if it is not a valid one."""
    if oid is not None and hashlib.sha256(data).hexdigest() != oid:
        raise StoreError(f"wire index {oid} does not match its sha256; download it again")
    if len(data) < HEADER.size:
        raise StoreError("wire index is truncated")
    magic, version, count, pack_size, pack_oid = HEADER.unpack_from(data, 0)
    if magic != MAGIC or version != VERSION:
        raise StoreError("wire index has a bad header")
    if len(data) != HEADER.size + count * ENTRY.size:
        raise StoreError(f"wire index claims {count} entries but holds {len(data)} bytes")
    entries = []
    prev = b""
    for i in range(count):
        cid, offset, length, checksum, base = ENTRY.unpack_from(data, HEADER.size + i * ENTRY.size)
        if cid <= prev:
            raise StoreError("wire index entries are not sorted by id")
        if length < HEADER_SIZE or offset + length > pack_size:
            raise StoreError(f"wire index entry {cid.hex()} lies outside its pack")
        prev = cid
        entries.append(WireEntry(cid.hex(), offset, length, checksum, base.hex() if base != NO_BASE else None))
    return WireIndex(pack_oid.hex(), pack_size, tuple(entries))


def read_object(entry: WireEntry, read_range: RangeReader) -> bytes:
    """The stored bytes of ``entry`` through ``read_range`` (an HTTP Range GET, a file read…), checked
    against the index's checksum and base; the chunk id itself is verified when the object is decoded."""
    data = read_range(entry.offset, entry.length)
    if len(data) != entry.length or xxhash.xxh3_64_intdigest(data) != entry.checksum:
        raise CorruptObjectError(entry.cid, "its bytes in the wire pack do not match the pack index")
    if unpack_header(entry.cid, data[:HEADER_SIZE]).base != entry.base:
        raise CorruptObjectError(entry.cid, "its header in the wire pack names another delta base than the index")
    return data


def plan_spans(entries: Iterable[WireEntry], gap: int, max_span: int) -> list[list[WireEntry]]:
    """The entries of ONE pack grouped into byte spans to read with one request each: sorted by
    offset, neighbours closer than ``gap`` bytes merged, a span no longer than ``max_span`` bytes
    (unless a single object is)."""
    spans: list[list[WireEntry]] = []
    cur: list[WireEntry] = []
    for e in sorted(entries, key=lambda e: e.offset):
        if cur and (e.offset - (cur[-1].offset + cur[-1].length) > gap or e.offset + e.length - cur[0].offset > max_span):
            spans.append(cur)
            cur = []
        cur.append(e)
    if cur:
        spans.append(cur)
    return spans


def file_range_reader(path: Path) -> RangeReader:
    """A range reader over a downloaded pack file."""

    def read(offset: int, length: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    return read


def chain(cid: str, locate: Callable[[str], WireEntry | None], have: Callable[[str], bool] = lambda _: False) -> list[WireEntry]:
    """The entries to fetch to rebuild ``cid``: it, then its bases down to a keyframe or to an object the
    caller already has. StoreError if a base is in no index (the remote would not be self-contained)."""
    out: list[WireEntry] = []
    seen: set[str] = set()
    cur: str | None = cid
    while cur is not None and not have(cur):
        if cur in seen:
            raise StoreError(f"delta chain of {cid} loops at {cur}")
        seen.add(cur)
        e = locate(cur)
        if e is None:
            raise StoreError(f"chunk {cur} (in the delta chain of {cid}) is in no pack index of the remote")
        out.append(e)
        cur = e.base
    return out
