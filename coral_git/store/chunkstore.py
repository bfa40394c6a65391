"""The chunk store: content-addressed chunks, deduplicated, delta-encoded.

A chunk's id is the xxh3-128 of its raw bytes, so ids never depend on how a chunk is encoded.
Adding never rewrites what is stored: a new chunk is a keyframe, or a delta against the previous
version of the same chunk — or, when that version is itself a delta, against the keyframe its chain
starts from (versions fan out from a keyframe: any of them decodes in two steps) — so an object only
ever depends on objects stored before it and discarding a version leaves nothing behind that others
need. A new keyframe starts when the delta no longer pays. Choosing better bases (newest-first, deeper chains)
is the repacker's job, over the reachable set only, like ``git repack``. Chains are bounded by
``max_chain``; every read is verified against the id.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import xxhash

from ..errors import CorruptObjectError, MissingObjectError, StoreError
from .codecs import Codec, RawCodec, codec, scratch
from .objects import HEADER_SIZE, LooseObjects, ObjectHeader, unpack_header

if TYPE_CHECKING:
    from .addpack import AddPack

DEFAULT_MAX_CHAIN = 1  # any version decodes in 2 steps after a repack: oldest of a 1 GiB model 426 MB/s vs 271 at D=3, for 4-8% more bytes (docs/store.md)
DEFAULT_ADD_CHAIN = 1  # deltas written by an add sit on a keyframe: every version checks out in two decodes
FRESHENED = "freshened"  # "<id> <unix time>" lines: packed objects an add reused
DELTA_PAYS = 0.9  # an add's delta is kept when it is below this share of the raw chunk
# codecs for new objects; every registered codec stays readable. sub-zz-ctx-planes (5) stores deltas
# 8-36% smaller but decodes at 0.5-0.8x the speed even with its numba kernels (benchmarks/bench_codec.py),
# so new deltas stay sub-zz-bg-zstd (2) unless coral.deltaCodec says otherwise; keyframes stay bg-zstd
# (rot-planes, 4, was 0.1-1.4% smaller and slower to decode).
KEYFRAME_CODEC = 1  # bg-zstd
DELTA_CODEC = 2  # sub-zz-bg-zstd


SYNCFS_OVER = 32  # objects per sync above which the whole filesystem is flushed at once
# a clean of a file at least this large streams its new objects into one pack (store/addpack.py)
# instead of a loose file each; when its new chunks hold fewer bytes than this, they are written
# loose after all (a one-tensor edit should not leave a pack behind). coral.addPackSize; 0: off
ADD_PACK_OVER = 64 << 20


def _syncfs(root: Path) -> bool:
    """``syncfs(2)`` on the filesystem holding ``root`` (Linux); False where it is not available."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(root, os.O_RDONLY)
    except (OSError, AttributeError):
        return False
    try:
        return getattr(libc, "syncfs", None) is not None and libc.syncfs(fd) == 0
    finally:
        os.close(fd)


def _freshened_lines(store: ChunkStore, since: float) -> list[tuple[str, str]]:
    out = []
    try:
        with open(store.root / FRESHENED) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].isdigit() and int(parts[1]) >= since:
                    out.append((parts[0], parts[1]))
    except OSError:
        pass
    return out


def freshened(store: ChunkStore, since: float) -> set[str]:
    """Ids of packed objects an add reused at or after ``since`` (gc counts them as young)."""
    return {c for c, _ in _freshened_lines(store, since)}


def forget_freshened(store: ChunkStore, before: float) -> None:
    """Drop the lines older than ``before`` (the caller holds the store lock; adds only append)."""
    keep = _freshened_lines(store, before)
    path = store.root / FRESHENED
    if not keep:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".tmp-{os.getpid()}-freshened")
    tmp.write_text("".join(f"{c} {t}\n" for c, t in keep))
    os.replace(tmp, path)


def _fresh(n: int) -> np.ndarray:
    return np.empty(n, dtype=np.uint8)


def chunk_id(raw: bytes | memoryview | np.ndarray) -> str:
    """The id of a chunk: xxh3-128 of its raw bytes, as 32 hex digits."""
    return xxhash.xxh3_128_hexdigest(raw)


class ObjectSource(Protocol):
    """Anything that can hand out stored objects by id (loose files, packs)."""

    def has(self, cid: str) -> bool: ...
    def read(self, cid: str) -> bytes | None: ...


class ChunkStore:
    """Objects under ``root`` (``$GIT_COMMON_DIR/coral``)."""

    def __init__(self, root: Path, *, max_chain: int = DEFAULT_MAX_CHAIN, level: int = 1, add_chain: int = DEFAULT_ADD_CHAIN) -> None:
        self.root = Path(root)
        self.loose = LooseObjects(self.root / "objects")
        self.sources: list[ObjectSource] = [self.loose]
        self.max_chain = max(0, max_chain)
        self.add_chain = max(0, min(add_chain, self.max_chain))
        self.level = level
        self.fetcher: Callable[[list[str]], None] | None = None
        self.delta_codec = DELTA_CODEC  # coral.deltaCodec: which registered delta codec new deltas use
        self.fsync = True  # coral.fsync: new objects reach the disk before git records a pointer
        self._codecs = threading.local()
        self._unsynced: list[str] = []  # objects written since the last sync()
        self.pack_adds = ADD_PACK_OVER  # coral.addPackSize: see begin_pack
        self._adding: AddPack | None = None  # the pack this add streams its new objects into
        self._adding_lock: int = -1  # its shared hold on the store lock (gc waits for the pack)
        self._adding_guard = threading.Lock()
        self.written = 0  # objects written by this process (automatic gc looks after adds that wrote some)

    # -- reading -----------------------------------------------------------------------------
    def has(self, cid: str) -> bool:
        return any(s.has(cid) for s in self.sources)

    def read_object(self, cid: str, context: str = "") -> bytes:
        """The stored bytes of object ``cid`` (header + payload), fetching from a remote if set."""
        data = self.read_object_local(cid)
        if data is None and self.fetcher is not None:
            self.fetcher([cid])
            data = self.read_object_local(cid)
        if data is None:
            raise MissingObjectError(cid, context)
        return data

    def header(self, cid: str, context: str = "") -> ObjectHeader:
        return unpack_header(cid, self.read_object(cid, context)[:HEADER_SIZE])

    def get(self, cid: str, context: str = "", alloc: Callable[[int], np.ndarray] | None = None) -> np.ndarray:
        """The verified raw bytes of chunk ``cid`` as a uint8 array, following delta bases.

        The result is a fresh array, or ``alloc(raw_len)`` filled in (smudge passes buffers it
        reuses). Stored objects are read into this thread's reused buffers and the bases of a chain
        decoded into them too: only the result is handed out."""
        chain: list[tuple[str, ObjectHeader, memoryview]] = []
        seen: set[str] = set()
        cur: str | None = cid
        while cur is not None:
            if cur in seen or len(chain) > max(self.max_chain, 255) + 1:
                raise CorruptObjectError(cid, "delta chain is cyclic or too long", context)
            seen.add(cur)
            data = self._read_into(cur, len(chain), context)
            hdr = unpack_header(cur, data)
            chain.append((cur, hdr, data))
            cur = hdr.base
        raw: np.ndarray | None = None
        for k in range(len(chain) - 1, -1, -1):
            oid, hdr, data = chain[k]
            if k == 0:
                out = alloc(hdr.raw_len) if alloc is not None else np.empty(hdr.raw_len, dtype=np.uint8)
            else:  # a base: lives until the next step has used it (two slots alternate)
                out = scratch(f"base{k % 2}", hdr.raw_len)
            raw = self.decode(oid, hdr, data, raw, context, out=out)
        assert raw is not None
        return raw

    def _read_into(self, cid: str, slot: int, context: str) -> memoryview:
        """The stored bytes of ``cid`` in this thread's read buffer number ``slot`` (valid until the
        slot is read into again), fetching from a remote if set; no per-object allocation."""
        data = self._read_local_into(cid, slot)
        if data is None and self.fetcher is not None:
            self.fetcher([cid])
            data = self._read_local_into(cid, slot)
        if data is None:
            raise MissingObjectError(cid, context)
        return data

    def _read_local_into(self, cid: str, slot: int) -> memoryview | None:
        for s in self.sources:
            read_into = getattr(s, "read_into", None)
            if read_into is None:
                got = s.read(cid)
                data = memoryview(got) if got is not None else None
            else:  # the first two objects of a chain (all of it since store v2) in kept buffers
                data = read_into(cid, (lambda n: scratch(f"read{slot}", n)) if slot < 2 else _fresh)
            if data is not None:
                return data
        return None

    def decode(
        self, oid: str, hdr: ObjectHeader, data: bytes | memoryview, base: np.ndarray | None, context: str,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """The raw bytes of object ``oid`` (header ``hdr``, stored bytes ``data``) given its base's raw
        bytes, written into ``out`` when given; verified."""
        try:
            c = self._codec(hdr.codec)
            if c.delta and (base is None or base.size != hdr.raw_len):
                raise ValueError("delta base has the wrong length")
            raw = c.decode(memoryview(data)[HEADER_SIZE:], hdr.itemsize, hdr.raw_len, base if c.delta else None, out=out)
        except KeyError:
            raise CorruptObjectError(oid, f"unknown codec {hdr.codec}", context) from None
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CorruptObjectError(oid, f"payload does not decode ({exc})", context) from None
        if chunk_id(raw) != oid:
            raise CorruptObjectError(oid, "content does not match its id", context)
        return raw

    def _codec(self, code: int) -> Codec:
        cache = getattr(self._codecs, "c", None)
        if cache is None:
            cache = self._codecs.c = {}
        c = cache.get(code)
        if c is None:
            c = cache[code] = codec(code, self.level)
        return c

    # -- writing -----------------------------------------------------------------------------
    def put(self, raw: np.ndarray, itemsize: int, base: str | None = None, cid: str | None = None) -> bool:
        """Store chunk ``raw`` (uint8 array) unless present; True when it was written.

        ``base`` names the previous version of the same chunk. When it (or the keyframe its chain
        starts from) is stored and the delta pays, the new chunk is written as a delta against it;
        otherwise as a keyframe. One encode per new chunk, and nothing stored is ever rewritten.
        """
        cid = cid or chunk_id(raw)
        adding = self._adding
        if adding is not None and adding.has(cid):
            return False  # this add already stored it
        if self.has(cid) and self._freshen(cid):
            return False
        # an add's pack opened while gc held the lock holds no lock: keyframes only (a delta inside a
        # pack gc cannot see yet could lose its base to that gc's sweep)
        may_delta = adding is None or self._adding_lock >= 0
        delta = self._delta_on(raw, itemsize, base) if may_delta and base and base != cid else None
        if delta is not None:
            # a delta may only land while its base is sure to stay: gc holds the lock from its
            # inventory to its sweep, so under the lock the base is either still there and this
            # object is seen (young, base kept), or gone. A busy lock means a keyframe, never a wait.
            # An add writing a pack holds the lock already, until the pack is in place.
            with nullcontext(True) if self._adding is not None else self.try_lock() as locked:
                if locked and self.has(delta[0]):
                    self._write(cid, delta[1])
                    return True
        self._write(cid, self.keyframe(raw, itemsize))
        return True

    def _write(self, cid: str, obj: bytes) -> None:
        adding = self._adding
        if adding is not None:
            adding.add(cid, obj, unpack_header(cid, obj[:HEADER_SIZE]).raw_len)
            self.written += 1
            return
        self.loose.write(cid, obj, writeback=self.fsync)
        self.written += 1  # not exact under threads; only "some" matters
        if self.fsync:
            self._unsynced.append(cid)  # list.append is atomic: clean's worker threads share it

    def begin_pack(self, size: int) -> bool:
        """Before cleaning a file of ``size`` bytes: from now until :meth:`sync` (or
        :meth:`abort_pack`), new objects go into one pack instead of loose files, when the file is
        at least ``pack_adds`` bytes. True when a pack is open.

        The pack holds a shared store lock from here to its rename, so gc (which takes the lock
        exclusively from its inventory to its sweep) never runs while objects it cannot see yet
        depend on bases it could delete. If gc holds the lock now (a background ``gc --auto`` in a
        training loop), the pack is opened without it and takes keyframes only, which depend on
        nothing: as the loose path does then, minus a file, a rename and a whole-filesystem sync per
        add (a ``syncfs`` behind gc's own writes made such saves 3x slower)."""
        if not self.pack_adds or size < self.pack_adds:
            return False
        with self._adding_guard:
            if self._adding is not None:
                return True
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # gc holds it: an unlocked pack of keyframes (see above)
                os.close(fd)
                fd = -1
            try:
                from .addpack import AddPack  # here: small adds and smudges never load the pack writer

                pack = AddPack(self.root / "packs")
            except OSError:
                if fd >= 0:
                    os.close(fd)
                return False
            self._adding, self._adding_lock = pack, fd
            self.sources.insert(0, pack)
            return True

    def _end_pack(self) -> AddPack | None:
        with self._adding_guard:
            pack, self._adding = self._adding, None
        return pack

    def _release_pack(self, pack: AddPack) -> None:
        try:
            self.sources.remove(pack)
        except ValueError:
            pass
        if self._adding_lock >= 0:
            os.close(self._adding_lock)
            self._adding_lock = -1

    def abort_pack(self) -> None:
        """Drop the open pack, if any (its add failed: no pointer names its objects)."""
        pack = self._end_pack()
        if pack is not None:
            try:
                pack.abort()
            finally:
                self._release_pack(pack)

    def _finish_pack(self) -> None:
        """Make the open pack an ordinary pack (fsynced, renamed), or, when it holds fewer than
        ``pack_adds`` bytes, write its objects as loose files for the sync below."""
        pack = self._end_pack()
        if pack is None:
            return
        small = pack.raw_bytes < self.pack_adds
        try:
            if small:
                for cid, _at, _n in pack.items():
                    data = pack.read(cid)
                    assert data is not None
                    self.loose.write(cid, data, writeback=self.fsync)
                    if self.fsync:
                        self._unsynced.append(cid)
            else:
                pack.finish()
                for s in self.sources:  # the pack source finds the new pack from now on
                    rescan = getattr(s, "rescan", None)
                    if rescan is not None:
                        rescan()
        finally:
            self._release_pack(pack)
            if small or pack.fd >= 0:
                pack.abort()  # its objects are loose now (or the add failed: git gets no pointer)

    def sync(self) -> int:
        """Flush the objects written since the last call to disk (file data, then their
        directories), like git's ``core.fsyncMethod=batch``: one pass per added file, before
        its pointer goes to git. An open add pack is finished first (fsynced and renamed).
        Returns how many loose objects were synced."""
        self._finish_pack()
        done, self._unsynced = self._unsynced, []
        if len(done) > SYNCFS_OVER and _syncfs(self.root):
            return len(done)  # one flush of the store's filesystem beats a thousand fsyncs
        dirs = set()
        for cid in done:
            path = self.loose.path(cid)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # packed meanwhile: the pack was synced when written
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            dirs.add(path.parent)
        for d in dirs:
            fd = os.open(d, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return len(done)

    def _delta_on(self, raw: np.ndarray, itemsize: int, base: str) -> tuple[str, bytes] | None:
        """``(base used, delta object)`` for ``raw`` against the previous version ``base`` — or,
        when that version is itself too deep, against the version its chain starts from (so
        versions fan out from a keyframe and any of them decodes in ``add_chain + 1`` steps) —
        or None when no delta pays."""
        found = self.delta_target(base, raw.size)
        if found is None:
            return None
        target, depth = found
        try:
            base_raw = self.get(target)
        except StoreError:
            return None  # a damaged base is fsck's business; this chunk is stored as a keyframe
        payload = self.delta_encoder().encode(raw, itemsize, base_raw)
        if len(payload) >= DELTA_PAYS * raw.size:
            return None
        return target, ObjectHeader(self.delta_codec, itemsize, depth + 1, raw.size, target).pack() + payload

    def delta_target(self, base: str, raw_len: int) -> tuple[str, int] | None:
        """``(object a new delta on base would be encoded against, its chain depth)``: ``base`` itself
        or, when it is too deep for ``add_chain``, the version its chain starts from; None when none is
        stored locally, readable, and of length ``raw_len``."""
        try:
            target: str | None = base
            for _ in range(self.max_chain + 2):
                if target is None:
                    return None
                data = self.read_header_local(target)
                if data is None:
                    return None
                hdr = unpack_header(target, data)
                depth = 0 if hdr.base is None else max(1, hdr.run)  # a keyframe's run once counted its dependents
                if depth < self.add_chain:
                    break
                target = hdr.base
            else:
                return None
        except StoreError:
            return None
        return (target, depth) if target is not None and hdr.raw_len == raw_len else None

    def delta_encoder(self) -> Codec:
        """The codec new deltas are written with (``coral.deltaCodec``)."""
        return self._codec(self.delta_codec)

    def keyframe(self, raw: np.ndarray, itemsize: int, run: int = 0) -> bytes:
        """The object (header + payload) that stores ``raw`` without a delta base: zstd-shuffled, or raw if smaller."""
        plain = self._codec(KEYFRAME_CODEC).encode(raw, itemsize)
        code = KEYFRAME_CODEC
        if len(plain) >= raw.size:
            plain, code = raw.tobytes(), RawCodec.code
        return ObjectHeader(code, itemsize, run, raw.size, None).pack() + plain

    def _freshen(self, cid: str) -> bool:
        """Mark a present object as just stored, so gc's grace period covers the add that needs it
        (git's "freshen"). A loose object gets a new mtime; a packed one a line in ``freshened``
        (a pack cannot be touched per object). False when the object vanished meanwhile (gc took
        it): store it again."""
        try:
            os.utime(self.loose.path(cid))
            return True
        except FileNotFoundError:
            if not any(s.has(cid) for s in self.sources if s is not self.loose):
                return False
        except OSError:
            return True  # not ours to touch (read-only or shared store): it is there
        try:
            with open(self.root / FRESHENED, "a") as f:
                f.write(f"{cid} {int(time.time())}\n")
        except OSError:
            pass  # a read-only store: nothing to protect against there
        return True

    def read_object_local(self, cid: str) -> bytes | None:
        """The stored bytes of ``cid`` from this machine's sources only (no remote fetch)."""
        for s in self.sources:
            data = s.read(cid)
            if data is not None:
                return data
        return None

    def read_header_local(self, cid: str) -> bytes | None:
        """The first bytes (at least the header) of ``cid`` from this machine's sources: a base's
        header is looked at for every new chunk, its payload only when the delta is encoded."""
        for s in self.sources:
            read_header = getattr(s, "read_header", None)
            data = read_header(cid) if read_header is not None else s.read(cid)
            if data is not None:
                return data
        return None

    @contextmanager
    def try_lock(self) -> Iterator[bool]:
        """A shared hold on the store lock unless gc or a repack holds it (True), else nothing
        (False); never waits. Shared: adds (clean's worker threads, parallel filter processes) do not
        exclude each other — an exclusive flock per thread turned every other delta into a keyframe."""
        try:
            fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock over re-encoding, packing and gc in this store."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
