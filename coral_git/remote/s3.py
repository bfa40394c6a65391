"""A chunk store under ``s3://bucket/prefix``: objects travel in wire packs, read by ranged GETs.

Layout under the prefix (docs/remote.md):

    packs/<sha256>.pack   a wire pack (``wirepack.py``: a local pack file byte for byte, <= ~64 MiB)
    packs/<sha256>.idx    its wire index: ids, byte ranges, checksums and delta bases
    objects/ab/cdef…      one object per key, what earlier versions pushed (still read)

Push: objects are cut into packs in the order given (bases first); each pack goes up as ONE PUT
(up to ``UPLOADS`` at once), then its index as another, indexes strictly in pack order. An index
appears only after its pack, and a pack without an index is invisible, so readers never see half a
push (a single PUT is atomic in S3), and what a killed push leaves visible is a self-contained
prefix. A 1 GB push is about 16 packs, ~34 requests.

Fetch: one LIST of ``packs/`` per process; the indexes not yet cached locally (under
``coral/remote-cache/NAME/``, named by their pack's sha256, so a cached index never goes stale)
come down once; then the objects needed, and the delta bases the indexes name, are read with ranged
GETs, neighbours in a pack merged into one request (up to a whole pack).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..errors import RemoteError, StoreError, UsageError
from . import packing
from .base import PARALLEL, RemoteStore, object_key, os_error
from .packing import PackQueue
from .wirepack import WireEntry, WireIndex, WireItem, build_packs, parse_index, plan_spans, read_object

MERGE_GAP = 1 << 20  # an S3 request costs about what 1 MiB of transfer does: merge reads closer than this
MAX_SPAN = 64 << 20  # ... up to a whole pack per request
SPAN_PARALLEL = 4  # span reads in flight (memory: this x MAX_SPAN at most)
DELETE_BATCH = 1000  # keys per DeleteObjects request (the S3 maximum)
UPLOADS = 3  # pack PUTs in flight during a push (memory: this x pack size)


@dataclass(frozen=True)
class Listed:
    """A key under the prefix: its size and last-modified time (unix seconds)."""

    size: int
    mtime: float


class S3Remote(RemoteStore):
    """A store under ``s3://bucket/prefix`` through fsspec/s3fs (any S3-compatible server).

    Endpoint, region and credentials come from the usual AWS settings (``AWS_ENDPOINT_URL``,
    ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE``, ``~/.aws/config``).
    """

    LIST_ABOVE = 64  # loose objects: has_many lists the prefix instead of one HEAD per id beyond this many ids

    def __init__(self, name: str, url: str, local_root: Path | None = None, pack_bytes: int | None = None) -> None:
        super().__init__(name, url)
        u = urlparse(url)
        if not u.netloc:
            raise UsageError(f"'{url}' has no bucket; use s3://BUCKET/PREFIX")
        self.bucket = u.netloc
        self.prefix = u.path.strip("/")
        self._fs = None
        self.local_root = local_root  # the local store: index cache and temp files go there
        self.queue = PackQueue(self._send_pack, pack_bytes or packing.pack_bytes(), self._tmp_dir())
        self.packs_written = 0
        self._lock = threading.Lock()
        self._located: dict[str, tuple[str, WireEntry]] | None = None
        self._indexes: dict[str, WireIndex] = {}
        self._listing: dict[str, Listed] | None = None
        self._loose: bool | None = None
        self._cached: dict[str, tuple[object, int, int]] = {}  # cid -> (spool, offset, length), read ahead
        self._spools: list = []
        self._uploads: ThreadPoolExecutor | None = None
        self._inflight: deque = deque()  # (future of the pack's PUT, WirePack, its work dir), in pack order

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def fs(self):
        if self._fs is None:
            try:
                import s3fs
            except ImportError:
                raise UsageError(
                    f"{self.describe()} needs s3fs; install it with 'pip install coral-git[s3]'"
                ) from None
            client: dict[str, str] = {}
            if os.environ.get("AWS_ENDPOINT_URL"):
                client["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if region:
                client["region_name"] = region
            fs = s3fs.S3FileSystem(
                client_kwargs=client,
                config_kwargs={"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}},
                skip_instance_cache=True,
                use_listings_cache=False,
                max_concurrency=1,
            )
            fs.retries = 3
            self._fs = fs
        return self._fs

    def key(self, rel: str) -> str:
        """The S3 key of ``rel`` (a path under the store's prefix)."""
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def _key(self, cid: str) -> str:
        return self.key(object_key(cid))

    def _tmp_dir(self) -> Path | None:
        return self.local_root / "tmp" if self.local_root is not None else None

    def _cache_dir(self) -> Path | None:
        return self.local_root / "remote-cache" / self.name if self.local_root is not None else None

    def _run(self, fn, *args):
        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, fn, *args)
        except (RemoteError, UsageError, StoreError):
            raise
        except Exception as exc:
            raise _s3_error(exc, self) from None

    async def _gather(self, fn, items: list, limit: int = PARALLEL):
        import asyncio

        sem = asyncio.Semaphore(limit)

        async def one(item):
            async with sem:
                return await fn(item)

        return await asyncio.gather(*(one(i) for i in items))

    async def _call(self, op: str, **kw):
        self.requests += 1
        return await self.fs._call_s3(op, Bucket=self.bucket, **kw)

    # -- listing and the location index ------------------------------------------------------------
    def list(self, rel: str, limit: int | None = None) -> dict[str, Listed]:
        """Keys under ``rel`` (relative to it), with size and time; at most ``limit`` of them."""
        base = self.key(rel)

        async def listing() -> dict[str, Listed]:
            out: dict[str, Listed] = {}
            token = None
            while True:
                kw = {"Prefix": base}
                if limit is not None:
                    kw["MaxKeys"] = limit
                if token:
                    kw["ContinuationToken"] = token
                resp = await self._call("list_objects_v2", **kw)
                for item in resp.get("Contents", []):
                    out[item["Key"][len(base) :]] = Listed(int(item["Size"]), item["LastModified"].timestamp())
                if limit is not None or not resp.get("IsTruncated"):
                    return out
                token = resp.get("NextContinuationToken")

        return self._run(listing)

    def pack_listing(self, refresh: bool = False) -> dict[str, Listed]:
        """Every key under ``packs/`` (``<sha256>.pack`` and ``<sha256>.idx``), listed once per process."""
        with self._lock:
            if self._listing is None or refresh:
                self._listing = self.list("packs/")
            return self._listing

    def indexes(self, refresh: bool = False) -> dict[str, WireIndex]:
        """The wire index of every complete pack (pack and index both present), by pack sha256."""
        listing = self.pack_listing(refresh)
        oids = [n[:-4] for n in listing if n.endswith(".idx") and f"{n[:-4]}.pack" in listing]
        cache = self._cache_dir()
        need = [o for o in oids if o not in self._indexes]
        fetch = []
        for oid in need:
            path = cache / f"{oid}.idx" if cache is not None else None
            if path is not None and path.is_file():
                self._indexes[oid] = self._parse(path.read_bytes(), oid, listing, path)
            else:
                fetch.append(oid)
        if fetch:
            fs = self.fs

            async def get(oid: str) -> bytes:
                self.requests += 1
                data = await fs._cat_file(f"{self.bucket}/{self.key(f'packs/{oid}.idx')}")
                self.bytes_down += len(data)
                return data

            for oid, data in zip(fetch, self._run(self._gather, get, fetch), strict=True):
                self._indexes[oid] = self._parse(data, oid, listing, None)
                if cache is not None:
                    cache.mkdir(parents=True, exist_ok=True)
                    _write_atomic(cache / f"{oid}.idx", data)
        return {o: self._indexes[o] for o in oids}

    def _parse(self, data: bytes, oid: str, listing: dict[str, Listed], cached: Path | None) -> WireIndex:
        try:
            index = parse_index(data)
            if index.pack_oid != oid or index.pack_size != listing[f"{oid}.pack"].size:
                raise StoreError("it describes another pack")
        except StoreError as exc:
            if cached is not None:
                cached.unlink(missing_ok=True)  # a damaged cache copy: download it again next time
                return self._parse(self._get(self.key(f"packs/{oid}.idx")), oid, listing, None)
            raise RemoteError(
                f"pack index packs/{oid[:12]}….idx on {self.describe()} is damaged ({exc}); "
                f"delete it and push again from a repository that has its chunks"
            ) from None
        return index

    def _get(self, key: str) -> bytes:
        fs = self.fs

        async def get() -> bytes:
            self.requests += 1
            return await fs._cat_file(f"{self.bucket}/{key}")

        data = self._run(get)
        self.bytes_down += len(data)
        return data

    def _load(self) -> dict[str, tuple[str, WireEntry]]:
        """Where each packed object lies: ``cid -> (pack sha256, entry)``."""
        with self._lock:
            if self._located is not None:
                return self._located
        located: dict[str, tuple[str, WireEntry]] = {}
        for oid, index in self.indexes().items():
            for e in index:
                located.setdefault(e.cid, (oid, e))
        with self._lock:
            self._located = located
        return located

    def _forget(self) -> None:
        """After this process changed the remote: list it again on next use."""
        with self._lock:
            self._located = None
            self._listing = None

    def has_loose(self) -> bool:
        """Whether the store holds loose objects (pushed by earlier versions); one LIST, once."""
        if self._loose is None:
            self._loose = bool(self.list("objects/", limit=1))
        return self._loose

    # -- has ----------------------------------------------------------------------------------------
    def has_many(self, ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return set()
        located = self._load()
        found = {c for c in ids if c in located}
        rest = [c for c in ids if c not in located]
        if rest and self.has_loose():
            found |= self._has_loose_many(rest)
        return found

    def _has_loose_many(self, ids: list[str]) -> set[str]:
        if len(ids) > self.LIST_ABOVE:
            return set(ids) & self.loose_ids()

        async def head(cid: str) -> bool:
            try:
                await self._call("head_object", Key=self._key(cid))
                return True
            except FileNotFoundError as exc:
                if "bucket" in str(exc).lower() and "nosuchbucket" in str(exc).lower():
                    raise
                return False

        found = self._run(self._gather, head, ids)
        return {c for c, ok in zip(ids, found, strict=True) if ok}

    def loose_ids(self) -> set[str]:
        """Every loose object's id (one LIST per 1000)."""
        out = set()
        for rest in self.list("objects/"):
            if len(rest) == 33 and rest[2] == "/":
                out.add(rest[:2] + rest[3:])
        return out

    # -- download -----------------------------------------------------------------------------------
    def read_entries(self, entries: list[tuple[str, WireEntry]], sink: Callable[[str, bytes], None]) -> None:
        """Read packed objects with ranged GETs (neighbours merged) and hand each, checked against its
        index entry, to ``sink(cid, data)`` (called from several tasks: it must be thread-safe)."""
        by_pack: dict[str, list[WireEntry]] = {}
        for oid, e in entries:
            by_pack.setdefault(oid, []).append(e)
        spans = [(oid, span) for oid, es in by_pack.items() for span in plan_spans(es, MERGE_GAP, MAX_SPAN)]
        if not spans:
            return
        fs = self.fs

        async def read(span: tuple[str, list[WireEntry]]) -> None:
            oid, es = span
            start, end = es[0].offset, es[-1].offset + es[-1].length
            self.requests += 1
            try:
                blob = await fs._cat_file(f"{self.bucket}/{self.key(f'packs/{oid}.pack')}", start=start, end=end)
            except FileNotFoundError:
                self._forget()
                raise RemoteError(
                    f"pack {oid[:12]} vanished from {self.describe()} while reading it (a gc there?); retry"
                ) from None
            self.bytes_down += len(blob)
            for e in es:
                sink(e.cid, read_object(e, lambda off, n: blob[off - start : off - start + n]))

        self._run(self._gather, read, spans, SPAN_PARALLEL)

    def prefetch(self, ids: Iterable[str], have=lambda _cid: False) -> None:
        """Before a fetch downloads ``ids`` batch by batch: read them, and the delta bases the indexes
        name, in few merged ranged GETs, into a temp file that ``download`` then serves from."""
        located = self._load()
        need: list[tuple[str, WireEntry]] = []
        seen: set[str] = set()
        for cid in ids:
            cur: str | None = cid
            while cur is not None and cur not in seen and cur in located and cur not in self._cached and not have(cur):
                seen.add(cur)
                oid, e = located[cur]
                need.append((oid, e))
                cur = e.base
        if not need:
            return
        spool = tempfile.TemporaryFile(dir=self._mkdir(self._tmp_dir()))
        self._spools.append(spool)
        lock = threading.Lock()
        end = [0]

        def sink(cid: str, data: bytes) -> None:
            with lock:
                at = end[0]
                end[0] += len(data)
            os.pwrite(spool.fileno(), data, at)
            self._cached[cid] = (spool, at, len(data))

        self.read_entries(need, sink)

    def download(self, ids: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        packed: list[tuple[str, WireEntry]] = []
        loose: list[str] = []
        located = self._load()
        for cid in dict.fromkeys(ids):
            hit = self._cached.pop(cid, None)
            if hit is not None:
                spool, at, n = hit
                out[cid] = os.pread(spool.fileno(), n, at)  # type: ignore[attr-defined]
            elif cid in located:
                packed.append(located[cid])
            else:
                loose.append(cid)
        lock = threading.Lock()

        def sink(cid: str, data: bytes) -> None:
            with lock:
                out[cid] = data

        self.read_entries(packed, sink)
        if loose:
            out.update(self._download_loose(loose))
        return out

    def _download_loose(self, ids: list[str]) -> dict[str, bytes]:
        fs = self.fs

        async def get(cid: str) -> bytes:
            self.requests += 1
            try:
                data = await fs._cat_file(f"{self.bucket}/{self._key(cid)}")
            except FileNotFoundError:
                raise self.missing(cid) from None
            self.bytes_down += len(data)
            return data

        return dict(zip(ids, self._run(self._gather, get, ids), strict=True))

    # -- upload -------------------------------------------------------------------------------------
    def upload(self, cid: str, data: bytes) -> None:
        self.upload_many({cid: data})
        self.flush()

    def upload_many(self, objs: dict[str, bytes]) -> None:
        """Queue objects for the next pack (a full pack goes up at once); ``flush`` sends the rest."""
        for cid, data in objs.items():
            self.queue.add(cid, data)

    def flush(self) -> None:
        """Send the last pack, then wait until every pack and its index are up."""
        try:
            self.queue.flush()
            self._publish(wait_all=True)
        finally:
            self._forget()

    def _send_pack(self, items: list[WireItem]) -> None:
        """Build one wire pack of ``items`` and start its PUT (up to ``UPLOADS`` packs go up at once);
        indexes are PUT in pack order, each once its pack and every earlier index are up."""
        work = Path(tempfile.mkdtemp(prefix="s3pack-", dir=self._mkdir(self._tmp_dir())))
        try:
            packs = list(build_packs(items, work, max_bytes=1 << 62))
        except OSError as exc:
            shutil.rmtree(work, ignore_errors=True)
            raise os_error(exc, self) from None
        if self._uploads is None:
            self._uploads = ThreadPoolExecutor(max_workers=UPLOADS, thread_name_prefix="coral-s3-put")
        for wp in packs:
            fut = self._uploads.submit(lambda wp=wp: self.put(f"packs/{wp.oid}.pack", wp.path.read_bytes()))
            self._inflight.append((fut, wp, work))
            self._publish(wait_one=len(self._inflight) >= UPLOADS)

    def _publish(self, wait_one: bool = False, wait_all: bool = False) -> None:
        """PUT the index of each uploaded pack, in order (a pack is visible once its index is)."""
        while self._inflight and (wait_all or wait_one or self._inflight[0][0].done()):
            fut, wp, work = self._inflight.popleft()
            wait_one = False
            try:
                fut.result()  # the pack's PUT: a RemoteError goes up from here
                index = wp.index_path.read_bytes()
                self.put(f"packs/{wp.oid}.idx", index)
            except BaseException:
                for f, _, _ in self._inflight:
                    f.cancel()
                self._inflight.clear()
                raise
            finally:
                wp.path.unlink(missing_ok=True)
            self.packs_written += 1
            cache = self._cache_dir()
            if cache is not None:  # a later fetch need not download it
                cache.mkdir(parents=True, exist_ok=True)
                _write_atomic(cache / f"{wp.oid}.idx", index)
            if not any(w == work for _, _, w in self._inflight):
                shutil.rmtree(work, ignore_errors=True)

    def put(self, rel: str, data: bytes) -> None:
        """One PUT (atomic in S3: the key shows the whole body or nothing)."""

        async def put() -> None:
            await self._call("put_object", Key=self.key(rel), Body=data)

        self._run(put)
        self.bytes_up += len(data)

    def delete(self, rels: list[str]) -> None:
        """Delete keys (relative to the prefix), up to 1000 per request, in the order given."""
        for i in range(0, len(rels), DELETE_BATCH):
            batch = rels[i : i + DELETE_BATCH]

            async def delete(batch=batch) -> None:
                resp = await self._call(
                    "delete_objects", Delete={"Objects": [{"Key": self.key(r)} for r in batch], "Quiet": True}
                )
                errors = resp.get("Errors") or []
                if errors:
                    raise RemoteError(
                        f"{self.describe()} refused to delete {errors[0].get('Key')} ({errors[0].get('Code')}); "
                        "check the credentials' permissions (s3:DeleteObject)"
                    )

            self._run(delete)
        self._forget()

    @staticmethod
    def _mkdir(path: Path | None) -> Path | None:
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
        return path


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{path.name}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _s3_error(exc: BaseException, remote: RemoteStore) -> RemoteError:
    """Turn what boto/aiohttp/s3fs raise into one line a user can act on."""
    import errno

    kind = type(exc).__name__
    text = str(exc)
    low = text.lower()
    if kind in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return RemoteError(
            f"no AWS credentials for {remote.describe()}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) and retry"
        )
    if isinstance(exc, PermissionError) or any(
        s in low for s in ("accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch", "forbidden")
    ):
        return RemoteError(
            f"{remote.describe()} refused the credentials ({text.splitlines()[0][:120] if text else kind}); "
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
    if "nosuchbucket" in low or ("bucket" in low and "not exist" in low):
        bucket = getattr(remote, "bucket", "?")
        return RemoteError(f"bucket '{bucket}' of {remote.describe()} does not exist; create it or fix the URL")
    if any(
        s in kind for s in ("EndpointConnectionError", "ConnectTimeout", "ClientConnector", "ConnectionError", "Timeout")
    ) or isinstance(exc, ConnectionError | TimeoutError):
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "the S3 endpoint")
        return RemoteError(f"cannot reach {remote.describe()} at {endpoint}; check the network and AWS_ENDPOINT_URL")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return os_error(exc, remote)
    return RemoteError(f"{remote.describe()} failed: {kind}: {text.splitlines()[0][:160] if text else ''}")
