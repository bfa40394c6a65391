"""Pack files: many stored objects in one file, with a sorted index for random access.

One pack is one file ``$GIT_COMMON_DIR/coral/packs/pack-<index hash>.pack`` (spec in docs/store.md):

    header   64 bytes: magic "CRPK", version u32 (=1), count u64, objects offset u64,
             xxh3-128 of the index (16 bytes), 24 zero bytes
    fanout   256 × u32: entries whose first id byte is <= i
    entries  count × 48 bytes, sorted by id: id (16), offset u64, length u64, mtime i64 (unix s), xxh3-64 u64
    objects  the stored objects (32-byte object header + payload), byte for byte as loose files hold them

All integers are little-endian. The index sits before the objects so that a truncated pack still
says what it held. A pack is written to a temp file, fsynced and renamed into place, and only then
are the loose copies it holds removed: a crash leaves the old state or the new one.

Version 2 (written by ``git add`` of a large file, store/addpack.py) has the same header, fanout and
entries, but the objects come first (from offset 64) and the index follows them: the header's third
field is then the index's offset. An add streams its new objects into the pack as they are encoded,
so it needs neither a loose file per object nor the object count up front.
"""

from __future__ import annotations

import itertools
import mmap
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from ..errors import CorruptObjectError, StoreError
from .chains import cut_by_size
from .objects import HEADER_SIZE
from .packformat import ENTRY, FANOUT_SIZE, HEADER, MAGIC, SUFFIX, VERSION, VERSION_ADD, fsync_dir, index_of

if TYPE_CHECKING:
    import numpy as np

DEFAULT_PACK_BYTES = 1 << 30


@dataclass(frozen=True, slots=True)
class Entry:
    """Where one object lies in a pack."""

    cid: str
    offset: int
    length: int
    mtime: int
    checksum: int


class Pack:
    """One pack file, memory-mapped; lookups binary-search the index in place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < HEADER.size + FANOUT_SIZE:
                raise StoreError(f"pack {path.name} is truncated ({size} bytes)")
            self.mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            # objects are read with pread, not sliced from the mapping: a slice copies anyway, and
            # every page touched through a mapping counts in the process's RSS until unmapped, so
            # reading an 8 GB pack through it showed as 8 GB of memory
            self.file = open(path, "rb")  # lives as long as the Pack, closed with it
        self.size = size
        magic, version, count, where, index_hash = HEADER.unpack_from(self.mm, 0)
        if magic != MAGIC or version not in (VERSION, VERSION_ADD):
            raise StoreError(f"pack {path.name} has a bad header")
        if version == VERSION:  # index, then the objects up to the end of the file
            index_at, objects_at, objects_end = HEADER.size, where, size
            index_end = HEADER.size + FANOUT_SIZE + count * ENTRY.size
            if objects_at != index_end or size < index_end:
                raise StoreError(f"pack {path.name} is truncated or its header is damaged")
        else:  # the objects, then the index, which ends the file
            index_at, objects_at, objects_end = where, HEADER.size, where
            index_end = index_at + FANOUT_SIZE + count * ENTRY.size
            if index_at < HEADER.size or size != index_end:
                raise StoreError(f"pack {path.name} is truncated or its header is damaged")
        if xxhash.xxh3_128_digest(memoryview(self.mm)[index_at:index_end]) != index_hash:
            raise StoreError(f"pack {path.name}: its index does not match its checksum")
        self.count = count
        self.version = version  # VERSION_ADD: written by an add (gc folds it into its own packs)
        self.objects_at = objects_at
        self.objects_end = objects_end
        self.fanout = struct.unpack_from("<256I", self.mm, index_at)
        if any(a > b for a, b in itertools.pairwise(self.fanout)) or self.fanout[255] != count:
            raise StoreError(f"pack {path.name}: its fanout table is inconsistent")
        self.entries_at = index_at + FANOUT_SIZE
        self.mtime = path.stat().st_mtime

    def _id(self, i: int) -> bytes:
        at = self.entries_at + i * ENTRY.size
        return self.mm[at : at + 16]

    def find(self, cid: str) -> int | None:
        """Index position of ``cid``, or None."""
        try:
            key = bytes.fromhex(cid)
        except ValueError:
            return None
        if len(key) != 16:
            return None
        b = key[0]
        lo = self.fanout[b - 1] if b else 0
        hi = self.fanout[b]
        while lo < hi:  # binary search over the sorted ids, in place in the mapping
            mid = (lo + hi) // 2
            if self._id(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo < self.fanout[b] and self._id(lo) == key:
            return lo
        return None

    def entry(self, i: int) -> Entry:
        cid, offset, length, mtime, checksum = ENTRY.unpack_from(self.mm, self.entries_at + i * ENTRY.size)
        return Entry(cid.hex(), offset, length, mtime, checksum)

    def iter_entries(self) -> Iterator[Entry]:
        for i in range(self.count):
            yield self.entry(i)

    def read_entry(self, e: Entry, verify: bool = True) -> bytes:
        """The stored bytes of entry ``e``; CorruptObjectError if cut off or damaged."""
        end = e.offset + e.length
        if e.offset < self.objects_at or end > self.objects_end:
            raise CorruptObjectError(e.cid, f"pack {self.path.name} is truncated before this object")
        data = os.pread(self.file.fileno(), e.length, e.offset)
        if len(data) != e.length:
            raise CorruptObjectError(e.cid, f"pack {self.path.name} is truncated before this object")
        if verify and xxhash.xxh3_64_intdigest(data) != e.checksum:
            raise CorruptObjectError(e.cid, f"its bytes in pack {self.path.name} do not match their checksum")
        return data

    def read_entry_into(self, e: Entry, buffer: Callable[[int], np.ndarray]) -> memoryview:
        """:meth:`read_entry` into ``buffer(e.length)`` (a reused buffer: no allocation), verified."""
        end = e.offset + e.length
        if e.offset < self.objects_at or end > self.size:
            raise CorruptObjectError(e.cid, f"pack {self.path.name} is truncated before this object")
        mv = memoryview(buffer(e.length))
        got = 0
        while got < e.length:
            k = _preadv(self.file.fileno(), mv[got:], e.offset + got)
            if k == 0:
                raise CorruptObjectError(e.cid, f"pack {self.path.name} is truncated before this object")
            got += k
        if xxhash.xxh3_64_intdigest(mv) != e.checksum:
            raise CorruptObjectError(e.cid, f"its bytes in pack {self.path.name} do not match their checksum")
        return mv

    def read_header(self, e: Entry) -> bytes:
        end = e.offset + min(e.length, HEADER_SIZE)
        if end > self.objects_end:
            raise CorruptObjectError(e.cid, f"pack {self.path.name} is truncated before this object")
        # pread, not the mapping: a fault in the mapping maps the pages around it too (64 KiB), so
        # looking at the headers of a 1 GiB pack's objects put 64 MB of it in the process's RSS
        return os.pread(self.file.fileno(), end - e.offset, e.offset)

    def close(self) -> None:
        self.file.close()
        try:
            self.mm.close()
        except BufferError:
            pass  # a view is alive; the mapping goes with it


def _preadv(fd: int, into: memoryview, offset: int) -> int:
    """``pread`` into ``into`` without an intermediate bytes object where the OS has ``preadv``."""
    if hasattr(os, "preadv"):
        return os.preadv(fd, [into], offset)
    data = os.pread(fd, len(into), offset)
    into[: len(data)] = data
    return len(data)


class PackSource:
    """Every pack under ``root``; an ``ObjectSource`` for ``ChunkStore.sources``.

    The directory is re-read when a lookup misses and the directory changed, so a pack written by
    another process (gc, repack) is found without reopening the store.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.packs: list[Pack] = []
        self.broken: dict[Path, str] = {}
        self._stamp: int | None = None
        self._lock = threading.Lock()
        self.rescan()

    def rescan(self, force: bool = False) -> bool:
        """Re-read the pack directory if it changed; True when it did."""
        with self._lock:
            for _ in range(5):
                try:
                    stamp = os.stat(self.root).st_mtime_ns
                except FileNotFoundError:
                    stamp = -1
                if stamp == self._stamp and not force:
                    return False
                force = False
                vanished = self._load()
                self._stamp = stamp
                if not vanished:
                    break
            return True

    def _load(self) -> bool:
        known = {p.path: p for p in self.packs}
        names = sorted(self.root.glob("pack-*" + SUFFIX)) if self.root.is_dir() else []
        packs: list[Pack] = []
        broken: dict[Path, str] = {}
        vanished = False
        for path in names:
            if path in known:
                packs.append(known.pop(path))
                continue
            try:
                packs.append(Pack(path))
            except FileNotFoundError:
                vanished = True  # removed by a repack that wrote its replacement first: list again
            except (StoreError, OSError, ValueError) as exc:
                broken[path] = str(exc)
        packs.sort(key=lambda p: p.mtime, reverse=True)  # newest first, like git
        self.packs = packs
        self.broken = broken
        # packs that vanished are not closed here: another thread may be reading one right now;
        # the mapping is released when the last reference goes
        return vanished

    def locate(self, cid: str) -> tuple[Pack, Entry] | None:
        for attempt in range(2):
            for p in self.packs:
                i = p.find(cid)
                if i is not None:
                    return p, p.entry(i)
            if attempt == 0 and not self.rescan():
                return None
        return None

    def has(self, cid: str) -> bool:
        return self.locate(cid) is not None

    def read(self, cid: str) -> bytes | None:
        found = self.locate(cid)
        return found[0].read_entry(found[1]) if found else None

    def read_into(self, cid: str, buffer: Callable[[int], np.ndarray]) -> memoryview | None:
        found = self.locate(cid)
        return found[0].read_entry_into(found[1], buffer) if found else None

    def read_header(self, cid: str) -> bytes | None:
        found = self.locate(cid)
        return found[0].read_header(found[1]) if found else None

    def entries(self) -> Iterator[tuple[Pack, Entry]]:
        """Every entry of every pack, newest pack first (duplicates included)."""
        for p in list(self.packs):
            for e in p.iter_entries():
                yield p, e

    def ids(self) -> set[str]:
        return {e.cid for _, e in self.entries()}


def attach(store) -> PackSource:
    """The store's pack source, appended to ``store.sources`` once."""
    for s in store.sources:
        if isinstance(s, PackSource):
            return s
    src = PackSource(store.root / "packs")
    store.sources.append(src)
    return src


# -- writing -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PackItem:
    """An object to pack: its id, its last-modified time and how to read its stored bytes."""

    cid: str
    mtime: int
    read: Callable[[], bytes]


def write_pack(root: Path, items: list[PackItem], on_item: Callable[[int], None] | None = None) -> Path | None:
    """Write ``items`` as one pack under ``root``, atomically; return its path (None if no items)."""
    if not items:
        return None
    root.mkdir(parents=True, exist_ok=True)
    n = len(items)
    objects_at = HEADER.size + FANOUT_SIZE + n * ENTRY.size
    table: list[tuple[bytes, int, int, int, int]] = []
    import secrets  # here, not at the top: the filter loads this module (pack reads) but never writes packs

    tmp = root / f".tmp-pack-{os.getpid()}-{secrets.token_hex(6)}"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        with os.fdopen(fd, "r+b") as f:
            f.seek(objects_at)
            pos = objects_at
            for k, it in enumerate(items):
                data = it.read()
                f.write(data)
                table.append((bytes.fromhex(it.cid), pos, len(data), it.mtime, xxhash.xxh3_64_intdigest(data)))
                pos += len(data)
                if on_item:
                    on_item(k + 1)
            index, digest = index_of(table)
            f.seek(0)
            f.write(HEADER.pack(MAGIC, VERSION, n, objects_at, digest))
            f.write(index)
            f.flush()
            os.fsync(f.fileno())
        final = root / f"pack-{digest.hex()}{SUFFIX}"
        os.replace(tmp, final)
        fsync_dir(root)
        return final
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- inventory and repacking ---------------------------------------------------------------------
@dataclass
class Stored:
    """One object id in the store: where its copies are and what the serving copy costs on disk."""

    cid: str
    size: int  # stored bytes of the copy that reads return
    mtime: float  # newest modification time over its copies
    loose: os.stat_result | None = None
    packed: list[tuple[Pack, Entry]] | None = None


def loose_stats(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """``(id, stat)`` of every loose object under ``root`` (``objects/``), in one directory pass."""
    try:
        dirs = [d for d in os.scandir(root) if len(d.name) == 2 and d.is_dir()]
    except FileNotFoundError:
        return
    for d in sorted(dirs, key=lambda d: d.name):
        try:
            entries = list(os.scandir(d.path))
        except FileNotFoundError:
            continue
        for f in entries:
            if len(f.name) != 30 or f.name.startswith("."):
                continue
            try:
                yield d.name + f.name, f.stat()
            except FileNotFoundError:
                continue


def inventory(store, src: PackSource | None = None) -> dict[str, Stored]:
    """Every object in ``store`` (loose first, then packs newest first, as reads see them)."""
    src = src or attach(store)
    out: dict[str, Stored] = {}
    for cid, st in loose_stats(store.loose.root):
        out[cid] = Stored(cid, st.st_size, st.st_mtime, loose=st)
    for p, e in src.entries():
        s = out.get(e.cid)
        if s is None:
            s = out[e.cid] = Stored(e.cid, e.length, float(e.mtime))
        s.mtime = max(s.mtime, float(e.mtime))
        s.packed = [*(s.packed or []), (p, e)]
    return out


def store_files(store, src: PackSource | None = None) -> tuple[int, int]:
    """``(files, bytes)`` the store's objects occupy on disk: loose files plus pack files."""
    src = src or attach(store)
    n = size = 0
    for _, st in loose_stats(store.loose.root):
        n += 1
        size += st.st_size
    for p in src.packs:
        n += 1
        size += p.size
    return n, size


@dataclass
class RepackResult:
    """What a repack did (or, with ``dry_run``, would do)."""

    packed: int = 0  # objects written into new packs
    rekeyed: int = 0  # delta objects re-encoded as keyframes to shorten chains
    packs_written: int = 0
    packs_removed: int = 0
    loose_removed: int = 0
    dropped: int = 0  # objects left out (garbage)
    dropped_bytes: int = 0


def repack(
    store,
    *,
    drop: set[str] | frozenset[str] = frozenset(),
    loose: bool = True,
    full: bool = False,
    max_chain: int | None = None,
    rekey: set[str] | frozenset[str] = frozenset(),
    pack_bytes: int = DEFAULT_PACK_BYTES,
    max_packs: int = 8,
    on_item: Callable[[int, int], None] | None = None,
) -> RepackResult:
    """Gather loose objects (and adds' packs) into a new pack and rewrite packs that hold ``drop``ped objects.

    The caller holds ``store.lock()``. Loose objects in ``drop`` are deleted; objects in ``drop``
    are left out of rewritten packs. With ``full`` (or more than ``max_packs`` packs) every pack is
    rewritten into new ones. With ``max_chain``, objects written whose delta chain is longer are
    re-encoded as keyframes, and so are the objects in ``rekey`` (their base is about to go: the
    packs that hold them are rewritten too). Each id is written once, from the copy reads return, so
    a repack never changes which version of an object is served except by making it a keyframe.
    """
    src = attach(store)
    src.rescan(force=True)
    inv = inventory(store, src)
    res = RepackResult()
    # an add's pack (version 2) is gathered like loose objects: what adds wrote since the last gc
    rewrite = [
        p for p in src.packs
        if full or (loose and p.version == VERSION_ADD) or any(p.find(c) is not None for c in (*drop, *rekey))
    ]
    if len(src.packs) - len(rewrite) + 1 > max_packs:
        rewrite = list(src.packs)
    rewriting = {p.path for p in rewrite}
    items: list[PackItem] = []
    loose_done: list[tuple[str, os.stat_result]] = []
    for cid, s in inv.items():
        if cid in drop:
            res.dropped += 1
            res.dropped_bytes += s.size
            continue
        if s.loose is not None:
            if loose:
                items.append(PackItem(cid, int(s.loose.st_mtime), _loose_reader(store, cid)))
                loose_done.append((cid, s.loose))
            continue
        assert s.packed
        pack, entry = s.packed[0]
        if pack.path in rewriting:
            items.append(PackItem(cid, int(s.mtime), _pack_reader(pack, entry)))
    if max_chain is not None or rekey:
        items, res.rekeyed = _rekey(store, items, max_chain if max_chain is not None else 1 << 30, set(rekey))
    batches = list(cut_by_size(items, lambda it: inv[it.cid].size, pack_bytes)) or [[]]
    done = 0
    written: set[Path | None] = set()
    for batch in batches:
        if not batch:
            continue
        written.add(write_pack(src.root, batch, (lambda k, base=done: on_item(base + k, len(items))) if on_item else None))
        done += len(batch)
        res.packs_written += 1
    res.packed = done
    # everything is safely in new packs: now remove what they replace and what was dropped
    for cid, st in loose_done:
        if _unlink_if_same(loose_path(store, cid), st):
            res.loose_removed += 1
    for cid in drop:
        s = inv.get(cid)
        if s is not None and s.loose is not None and _unlink_if_same(loose_path(store, cid), s.loose):
            res.loose_removed += 1
    for p in rewrite:
        if p.path in written:
            continue  # packs are named by content: the same objects were just written under this name
        p.path.unlink(missing_ok=True)
        res.packs_removed += 1
    src.rescan(force=True)
    return res


def loose_path(store, cid: str) -> str:
    """The loose file of ``cid`` as a plain string (pathlib costs more than the read in tight loops)."""
    return os.path.join(store.loose.root, cid[:2], cid[2:])


def read_loose(store, cid: str, n: int = -1) -> bytes | None:
    try:
        with open(loose_path(store, cid), "rb") as f:
            return f.read(n)
    except FileNotFoundError:
        return None


def _loose_reader(store, cid: str) -> Callable[[], bytes]:
    def read() -> bytes:
        data = read_loose(store, cid)
        if data is None:
            raise StoreError(f"loose object {cid} vanished while packing; is another gc running?")
        return data

    return read


def _pack_reader(pack: Pack, entry: Entry) -> Callable[[], bytes]:
    return lambda: pack.read_entry(entry)


def _unlink_if_same(path: str, st: os.stat_result) -> bool:
    """Remove ``path`` unless it was replaced since ``st`` was taken (a re-encoded base)."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    if (now.st_ino, now.st_mtime_ns, now.st_size) != (st.st_ino, st.st_mtime_ns, st.st_size):
        return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def _rekey(
    store, items: list[PackItem], max_chain: int, force: set[str] = frozenset(), hints: dict[str, int] | None = None  # type: ignore[assignment]
) -> tuple[list[PackItem], int]:
    """Re-encode as keyframes the written objects in ``force`` and those whose delta chain would exceed
    ``max_chain``. ``hints``: new depths (or bounds) of objects written elsewhere (re-chosen bases)."""
    from .objects import ObjectHeader, unpack_header

    bases: dict[str, str | None] = {}

    def base_of(cid: str) -> str | None:
        if cid not in bases:
            try:
                hdr = read_header(store, cid)
                bases[cid] = hdr.base if hdr is not None else None
            except StoreError:
                bases[cid] = None
        return bases[cid]

    depths: dict[str, int] = {}

    def depth(cid: str) -> int:
        chain: list[str] = []
        cur: str | None = cid
        while cur is not None and cur not in depths and len(chain) <= 512 and cur not in chain:
            chain.append(cur)
            cur = base_of(cur)
        below = depths.get(cur, -1) if cur is not None else -1
        for k, c in enumerate(reversed(chain)):
            depths[c] = below + 1 + k
        return depths[cid]

    writing = {it.cid for it in items}
    order = sorted(writing, key=depth)
    rekey: set[str] = set(force) & writing
    new_depth: dict[str, int] = dict(hints or {})
    for cid in order:
        b = None if cid in rekey else base_of(cid)
        d = 0 if b is None else new_depth.get(b, depth(b)) + 1
        if d > max_chain:
            rekey.add(cid)
            d = 0
        new_depth[cid] = d
    if not rekey:
        return items, 0

    def reader(it: PackItem) -> Callable[[], bytes]:
        def read() -> bytes:
            from .chunkstore import KEYFRAME_CODEC
            from .codecs import RawCodec, codec

            old = unpack_header(it.cid, it.read())
            raw = store.get(it.cid)
            payload, code = codec(KEYFRAME_CODEC, store.level).encode(raw, old.itemsize), KEYFRAME_CODEC
            if len(payload) >= raw.size:
                payload, code = raw.tobytes(), RawCodec.code
            return ObjectHeader(code, old.itemsize, 0, old.raw_len, None).pack() + payload

        return read

    return [PackItem(it.cid, it.mtime, reader(it)) if it.cid in rekey else it for it in items], len(rekey)


def read_header(store, cid: str):
    """The header of the copy of ``cid`` that reads return, reading 32 bytes where possible."""
    from .objects import unpack_header

    for s in store.sources:
        if s is store.loose:
            data = read_loose(store, cid, HEADER_SIZE)
            if data is not None:
                return unpack_header(cid, data)
            continue
        reader = getattr(s, "read_header", None)
        data = reader(cid) if reader is not None else s.read(cid)
        if data is not None:
            return unpack_header(cid, bytes(data[:HEADER_SIZE]))
    return None
