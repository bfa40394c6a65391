"""A chunk store on a Git LFS server: stored objects travel in wire packs, located through ``refs/coral/index``.

Push: objects handed to ``upload_many`` are spooled to a temp file. Given the file versions that
name each chunk (``order_hint``, from the pre-push step), up to ``ORDER_WINDOW`` packs' worth is held
back and cut into packs of up to ``DEFAULT_PACK_BYTES`` that hold what the same versions need
(packorder.py: a checkout where Range is ignored downloads little but its own); without a hint,
packs are cut in arrival order as soon as one is full. Packs and their wire indexes go up as LFS
objects, ``UPLOAD_PACKS`` at a time. ``flush`` uploads the rest, then pushes a commit listing the
new packs on ``refs/coral/index`` (indexref.py). Until that ref moves nothing new is visible, and a
retried push rebuilds the same packs (same objects, same order, same bytes, same oids), which the
batch API reports as already there: only what is missing goes up again.

Fetch: the index ref is fetched once per process, the wire indexes it lists are downloaded once
(cached under ``coral/wire/idx``), and each object is read from its pack by an HTTP ``Range`` GET
where the server honours Range — adjacent objects of one pack merged into one request — or from the
whole pack, downloaded once per process (verified) where it does not.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import RemoteError, StoreError
from ..store.objects import unpack_header
from . import indexref
from .base import RemoteStore
from .lfs import LfsClient, LfsError, LfsObject
from .lfs import resolve as resolve_endpoint
from .lfs.gitconfig import GitConfig
from .packorder import plan_packs
from .wirepack import (
    DEFAULT_PACK_BYTES,
    WireEntry,
    WireIndex,
    WireItem,
    build_packs,
    parse_index,
    plan_spans,
    read_object,
)

MERGE_GAP = 64 << 10  # ranged reads of one pack closer than this are merged into one request (<=6% extra bytes per ~1 MiB object)
MAX_SPAN = 16 << 20  # ... up to this many bytes per request (bounds memory: concurrency x this)
ORDER_WINDOW = 64  # packs' worth of objects held back to be ordered (the temp spool stays <= 4 GiB)
UPLOAD_PACKS = 4  # packs built and uploaded together (one batch request, parallel PUTs)


class LfsRemote(RemoteStore):
    """The chunk store of git remote ``name`` on its Git LFS server."""

    def __init__(self, name: str, cwd: Path, store_root: Path, pack_bytes: int = DEFAULT_PACK_BYTES) -> None:
        self.cwd = cwd
        self.config = GitConfig(cwd)
        url = resolve_endpoint(name, "download", self.config).url
        super().__init__(name, url)
        self.pack_bytes = int(os.environ.get("CORAL_WIRE_PACK_BYTES") or pack_bytes)  # smaller packs for tests
        self.cache = store_root / "wire"
        self._clients: dict[str, LfsClient] = {}
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._located: dict[str, tuple[WireIndex, WireEntry]] | None = None
        self._packs: dict[str, indexref.PackRef] = {}
        self._spools: dict[str, object] = {}
        self._work: Path | None = None
        self._pending: list[WireItem] = []
        self._pending_bytes = 0
        self._spool_file = None
        self._spool_size = 0
        self._pushed: list[indexref.PackRef] = []
        self._named_by: dict[str, list[int]] = {}
        self._bases: dict[str, str | None] = {}
        self._tip: str | None = None
        self._cached: dict[str, tuple] = {}  # cid -> (file, offset, length) read ahead by prefetch
        self._cache_files: list = []

    # -- plumbing --------------------------------------------------------------------------------
    def client(self, operation: str) -> LfsClient:
        with self._lock:
            if operation not in self._clients:
                self._clients[operation] = LfsClient(resolve_endpoint(self.name, operation, self.config), self.name, self.config)
            return self._clients[operation]

    def transfer_stats(self) -> dict[str, int]:
        out = {"requests": 0, "bytes_up": 0, "bytes_down": 0}
        for c in self._clients.values():
            for k in out:
                out[k] += c.stats[k]
        return out

    def workdir(self) -> Path:
        if self._work is None:
            tmp = self.cache.parent / "tmp"
            tmp.mkdir(parents=True, exist_ok=True)
            self._work = Path(tempfile.mkdtemp(prefix=f"wire-{os.getpid()}-", dir=tmp))
            atexit.register(shutil.rmtree, self._work, True)
        return self._work

    # -- the location index -----------------------------------------------------------------------
    def _load(self) -> dict[str, tuple[WireIndex, WireEntry]]:
        """Every chunk the remote's packs hold, with where it lies (fetched once per process)."""
        with self._load_lock:
            if self._located is None:
                self._located = self._read_index()
            return self._located

    def _read_index(self) -> dict[str, tuple[WireIndex, WireEntry]]:
        self._tip = indexref.fetch(self.cwd, self.name)
        packs = indexref.read(self.cwd, self._tip)
        idx_dir = self.cache / "idx"
        idx_dir.mkdir(parents=True, exist_ok=True)
        missing = [(LfsObject(p.index_oid, p.index_size), idx_dir / p.index_oid) for p in packs
                   if not (idx_dir / p.index_oid).is_file()]
        if missing:
            self.client("download").download(missing)
        located: dict[str, tuple[WireIndex, WireEntry]] = {}
        for p in packs:
            try:
                index = parse_index((idx_dir / p.index_oid).read_bytes(), p.index_oid)
            except StoreError as exc:
                (idx_dir / p.index_oid).unlink(missing_ok=True)
                raise RemoteError(f"{self.describe()}: pack index {p.index_oid[:12]}: {exc}") from None
            if index.pack_oid != p.pack_oid or index.pack_size != p.pack_size:
                raise RemoteError(f"{self.describe()}: pack index {p.index_oid[:12]} describes another pack than {indexref.REF} says")
            for e in index:
                located.setdefault(e.cid, (index, e))
            self._packs[p.pack_oid] = p
        return located

    def has_many(self, ids: Iterable[str]) -> set[str]:
        located = self._wrap(self._load)
        return {c for c in ids if c in located}

    # -- download ---------------------------------------------------------------------------------
    def prefetch(self, ids: Iterable[str], have=lambda _cid: False) -> None:
        """Before objects ``ids`` are downloaded batch by batch: where the server ignores Range, download
        every pack they (and their delta chains, read from the indexes) need, in parallel, once."""
        located = self._wrap(self._load)
        packs: dict[str, WireIndex] = {}
        seen: set[str] = set()
        for cid in ids:
            cur: str | None = cid
            while cur is not None and cur not in seen and cur in located and not have(cur):
                seen.add(cur)
                index, entry = located[cur]
                packs.setdefault(index.pack_oid, index)
                cur = entry.base
        if not packs:
            return
        readers = self._readers(packs)
        client = self.client("download")
        order = list(packs)
        if client.range_supported is None:
            first = packs[order[0]]
            e = first.entries[0]
            self._wrap(lambda: readers[order[0]](e.offset, e.length))  # one read: is Range honoured?
        if client.range_supported:
            self._prefetch_ranges(sorted(seen))  # just the objects needed, in few merged reads
            return
        self._wrap(lambda: client._parallel(lambda oid: readers[oid](0, 1), order))

    def _readers(self, packs: dict[str, WireIndex]) -> dict[str, object]:
        """A range reader per pack (one per process: a whole pack is downloaded at most once)."""
        client = self.client("download")
        with self._load_lock:
            need = [p for p in packs if p not in self._spools]
            if need:
                objs = [LfsObject(p, packs[p].pack_size) for p in need]
                actions = self._wrap(lambda: client.download_actions(objs))
                work = self.workdir()
                for o in objs:
                    self._spools[o.oid] = client.range_reader(o, work / f"{o.oid}.pack", actions[o.oid])
            return {p: self._spools[p] for p in packs}

    def _plan(self, ids: Iterable[str]) -> tuple[list[tuple[str, list[WireEntry]]], dict[str, WireIndex]]:
        """Byte spans to read: the objects of ``ids`` grouped per pack, neighbours merged."""
        located = self._wrap(self._load)
        by_pack: dict[str, list[WireEntry]] = {}
        index_of: dict[str, WireIndex] = {}
        for cid in dict.fromkeys(ids):
            if cid not in located:
                raise self.missing(cid)
            index, entry = located[cid]
            by_pack.setdefault(index.pack_oid, []).append(entry)
            index_of[index.pack_oid] = index
        spans = [(pack_oid, span) for pack_oid, entries in by_pack.items()
                 for span in plan_spans(entries, MERGE_GAP, MAX_SPAN)]
        return spans, index_of

    def _read_spans(self, spans: list[tuple[str, list[WireEntry]]], index_of: dict[str, WireIndex], sink) -> None:
        """Read every span (in parallel, after a first read that learns whether Range is honoured, so
        that no whole pack is downloaded twice) and hand each checked object to ``sink(cid, data)``."""
        client = self.client("download")
        self._readers(index_of)

        def read_span(span: tuple[str, list[WireEntry]]) -> None:
            pack_oid, entries = span
            start = entries[0].offset
            end = entries[-1].offset + entries[-1].length
            blob = self._spools[pack_oid](start, end - start)  # type: ignore[operator]
            for e in entries:
                sink(e.cid, read_object(e, lambda off, n: blob[off - start : off - start + n]))

        if client.range_supported is None and spans:
            self._wrap(lambda: read_span(spans[0]))
            spans = spans[1:]
        workers = min(client.concurrency, len(spans)) or 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            self._wrap(lambda: list(pool.map(read_span, spans)))
        self.bytes_down = client.stats["bytes_down"]
        self.requests = client.stats["requests"]

    def _prefetch_ranges(self, ids: list[str]) -> None:
        """Range honoured: read every object a fetch will need in few merged requests, into a temp
        file that ``download`` then serves from (instead of small reads batch by batch)."""
        spans, index_of = self._plan(ids)
        path = self.workdir() / f"ranges-{len(self._cache_files)}"
        f = open(path, "w+b")
        self._cache_files.append(f)
        lock = threading.Lock()

        def sink(cid: str, data: bytes) -> None:
            with lock:
                f.seek(0, os.SEEK_END)
                self._cached[cid] = (f, f.tell(), len(data))
                f.write(data)

        self._read_spans(spans, index_of, sink)
        f.flush()

    def download(self, ids: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        rest = []
        for cid in dict.fromkeys(ids):
            hit = self._cached.pop(cid, None)
            if hit is None:
                rest.append(cid)
                continue
            f, off, n = hit
            out[cid] = os.pread(f.fileno(), n, off)
        if rest:
            spans, index_of = self._plan(rest)
            lock = threading.Lock()

            def sink(cid: str, data: bytes) -> None:
                with lock:
                    out[cid] = data

            self._read_spans(spans, index_of, sink)
        return out

    # -- upload -----------------------------------------------------------------------------------
    def upload(self, cid: str, data: bytes) -> None:
        self.upload_many({cid: data})

    def order_hint(self, named_by: dict[str, list[int]]) -> None:
        """Per chunk, the file versions of the push that name it (packorder.py): packs then hold what
        the same versions need, instead of the objects in the order they arrive."""
        self._named_by = named_by

    def upload_many(self, objs: dict[str, bytes]) -> None:
        """Queue objects for the next packs (sent once enough is queued); ``flush`` publishes them."""
        window = self.pack_bytes * (ORDER_WINDOW if self._named_by else 1)
        for cid, data in objs.items():
            if self._pending and self._pending_bytes + len(data) > window:
                self._send_pending()
            self._pending.append(self._spool(cid, data))
            self._bases[cid] = unpack_header(cid, data).base
            self._pending_bytes += len(data)

    def _spool(self, cid: str, data: bytes) -> WireItem:
        if self._spool_file is None:
            self._spool_file = open(self.workdir() / "spool", "w+b")
            self._spool_size = 0
        f = self._spool_file
        offset = self._spool_size
        f.seek(offset)
        f.write(data)
        self._spool_size += len(data)
        length = len(data)

        def read() -> bytes:
            f.seek(offset)
            return f.read(length)

        return WireItem(cid, length, read)

    def _send_pending(self) -> None:
        if not self._pending:
            return
        out = self.workdir() / "packs"
        plan = plan_packs(self._pending, self._named_by, self._bases, self.pack_bytes)
        idx_dir = self.cache / "idx"
        idx_dir.mkdir(parents=True, exist_ok=True)
        for i in range(0, len(plan), UPLOAD_PACKS):
            built = [wp for items in plan[i : i + UPLOAD_PACKS]
                     for wp in build_packs(items, out, max_bytes=sum(it.length for it in items))]
            files = [f for wp in built for f in ((LfsObject(wp.oid, wp.size), wp.path),
                                                 (LfsObject(wp.index_oid, wp.index_size), wp.index_path))]
            self._wrap(lambda files=files: self.client("upload").upload(files))
            for wp in built:
                self._pushed.append(indexref.PackRef(wp.oid, wp.size, wp.index_oid, wp.index_size))
                os.replace(wp.index_path, idx_dir / wp.index_oid)  # a later fetch need not download it
                wp.path.unlink(missing_ok=True)
        self._pending, self._pending_bytes = [], 0
        if self._spool_file is not None:
            self._spool_file.close()
            (self.workdir() / "spool").unlink(missing_ok=True)
            self._spool_file = None
        stats = self.transfer_stats()
        self.bytes_up, self.requests = stats["bytes_up"], stats["requests"]

    def flush(self) -> None:
        """Upload the last pack, then publish every new pack on the remote's ``refs/coral/index``."""
        self._send_pending()
        if not self._pushed:
            return
        known = self._located is not None  # the index (and its tip) was read by this push
        self._wrap(lambda: indexref.publish(self.cwd, self.name, self._pushed, tip=self._tip, known=known))
        self._pushed = []
        with self._load_lock:
            self._located = None  # re-read on next use

    def _wrap(self, fn):
        try:
            return fn()
        except LfsError as exc:
            raise RemoteError(str(exc)) from None
