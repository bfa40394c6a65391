"""Fetch: download chunk objects (and their delta bases) from a remote store into the local store.

Downloads land in a staging directory under ``coral/tmp``; each object is verified against its id
(decoding its delta chain, bases first) before it is renamed into ``coral/objects``. So the local
store never holds an unverified or half-written object, whatever happens midway.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import CoralError, RemoteError, StoreError
from ..store.chunkstore import ChunkStore
from ..store.objects import LooseObjects, ObjectHeader, unpack_header
from ..ui import transfer_bar
from .backends import default_remote, resolve
from .base import RemoteStore

BATCH = 32  # objects per download round trip batch (bounded memory: BATCH x object size)


@dataclass
class FetchStats:
    objects: int = 0
    bytes: int = 0

    def line(self, remote: RemoteStore) -> str:
        return f"fetched {self.objects} object(s), {self.bytes / 1e6:.1f} MB from {remote.describe()}"


def fetch_objects(store: ChunkStore, remote: RemoteStore, ids: Iterable[str], *, progress: bool = True) -> FetchStats:
    """Bring objects ``ids`` and every delta base they need into ``store``, verified."""
    want = [c for c in dict.fromkeys(ids) if not store.has(c)]
    stats = FetchStats()
    if not want:
        return stats
    staging_dir = store.root / "tmp" / f"fetch-{os.getpid()}-{secrets.token_hex(4)}"
    staging = LooseObjects(staging_dir)
    headers: dict[str, ObjectHeader] = {}
    prefetch = getattr(remote, "prefetch", None)
    if prefetch is not None:
        prefetch(want, store.has)  # a packing store may fetch whole packs in parallel up front
    try:
        # rich allows one live bar per process: delayed smudges (worker threads) fetch without one
        progress = progress and threading.current_thread() is threading.main_thread()
        with transfer_bar(f"fetching from {remote.name}", progress) as bar:
            task = bar.add_task("fetch", total=len(want), mb=0.0)
            while want:
                nxt: list[str] = []
                for i in range(0, len(want), BATCH):
                    batch = want[i : i + BATCH]
                    for cid, data in remote.download(batch).items():
                        hdr = unpack_header(cid, data)
                        _write(staging, cid, data)
                        headers[cid] = hdr
                        stats.objects += 1
                        stats.bytes += len(data)
                        bar.update(task, advance=1, mb=stats.bytes / 1e6)
                        if hdr.base and hdr.base not in headers and not store.has(hdr.base):
                            nxt.append(hdr.base)
                want = [c for c in dict.fromkeys(nxt) if c not in headers]
                bar.update(task, total=stats.objects + len(want))
        _install(store, staging, headers, remote)
    finally:
        shutil.rmtree(staging_dir, ignore_errors=True)
    return stats


def _write(objs: LooseObjects, cid: str, data: bytes) -> None:
    try:
        objs.write(cid, data)
    except (OSError, StoreError) as exc:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            where = objs.root.parent.parent
            raise StoreError(f"disk full while fetching into {where}; free space and retry") from None
        raise


def _install(store: ChunkStore, staging: LooseObjects, headers: dict[str, ObjectHeader], remote: RemoteStore) -> None:
    """Verify staged objects bases first (a chain decoded once), then rename each into the store."""
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for cid, hdr in headers.items():
        if hdr.base and hdr.base in headers:
            children.setdefault(hdr.base, []).append(cid)
        else:
            roots.append(cid)
    done = 0
    stack: list[tuple[str, np.ndarray | None]] = [(c, None) for c in roots]
    while stack:
        cid, base_raw = stack.pop()
        hdr = headers[cid]
        data = staging.read(cid)
        assert data is not None
        if hdr.base and base_raw is None:
            base_raw = store.get(hdr.base, f"base of {cid}")  # a base already in the local store
        try:
            raw = store.decode(cid, hdr, data, base_raw if hdr.base else None, f"fetched from {remote.describe()}")
        except StoreError as exc:
            raise RemoteError(f"{exc} (object as downloaded from {remote.describe()})") from None
        final = store.loose.path(cid)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging.path(cid), final)
        done += 1
        stack.extend((k, raw) for k in children.get(cid, []))
    if done != len(headers):
        raise RemoteError(f"{remote.describe()} holds a cyclic delta chain; run 'git coral fsck' there")


# -- which chunks: the pointer scans live in git/pointers.py ----------------------------------------


# -- the smudge hook-up ------------------------------------------------------------------------------
def make_fetcher(repo) -> Callable[[list[str]], None]:
    """A ``ChunkStore.fetcher`` that downloads missing chunks from the default remote, lazily resolved."""
    state: dict[str, RemoteStore | CoralError | None] = {}
    lock = threading.Lock()  # delayed smudges call this from several threads: resolve the remote once

    def fetcher(ids: list[str]) -> None:
        with lock:
            if "remote" not in state:
                name = default_remote(repo)
                try:
                    state["remote"] = resolve(repo, name) if name else None
                except CoralError as exc:
                    state["remote"] = exc
        remote = state["remote"]
        if remote is None:
            return  # no remote at all: smudge reports the chunk missing from the local store
        if isinstance(remote, CoralError):
            raise remote
        stats = fetch_objects(repo.store, remote, ids)
        if stats.objects and os.environ.get("CORAL_QUIET") is None:
            sys.stderr.write(f"coral: {stats.line(remote)}\n")
            sys.stderr.flush()

    return fetcher
