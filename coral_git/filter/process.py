"""git's filter protocol: the long-running ``filter-process`` (pkt-line v2) and single-file clean/smudge.

stdout carries protocol and file bytes only; every message goes to stderr.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, BinaryIO

import xxhash

from ..core import pointer as ptr
from ..errors import CoralError, FormatError, PointerError, StoreError
from ..git.install import ensure_hooks
from ..git.repo import Repo, find_repo
from ..ui import ByteMeter, log
from .fresh import ENV as FRESH_ENV
from .fresh import CachedSpool, CleanCache, FreshSpool, fresh_pointers
from .pktline import PktReader, PktWriter

if TYPE_CHECKING:
    from ..core.mapped import MappedFile
    from ..git.tracked import TrackedTensors
    from ..store.chunkstore import ChunkStore
    from ..store.recent import RecentTensors
    from . import direct
    from .shardbase import ShardBases
    from .streamclean import StreamingClean

_LOADED = False


def _load() -> None:
    """Import the clean/smudge machinery (numpy, the store, codecs, format readers: ~60 ms) on the first
    request that needs it. A session git starts only to re-check a file it just added (``git commit``
    after ``git add``, racy-git) is answered from the clean cache (filter/fresh.py) without it."""
    global _LOADED, MappedFile, TrackedTensors, MAX_CANDIDATES, RecentTensors, clean, ShardBases
    global smudge, Fallback, StreamingClean
    if _LOADED:
        return
    from ..core.mapped import MappedFile
    from ..git.tracked import TrackedTensors
    from ..store.basechoice import MAX_CANDIDATES
    from ..store.recent import RecentTensors
    from .clean import clean
    from .shardbase import ShardBases
    from .smudge import smudge
    from .streamclean import Fallback, StreamingClean

    _LOADED = True


SPOOL_IN_MEMORY = 8 << 20
# builds the store's on-demand fetcher for a repository (remote.fetch.make_fetcher; the CLI passes it in,
# so the filter does not depend on the remote layer above it)
FetcherFactory = Callable[[Repo], Callable[[list[str]], None]]


def _ensure_hooks(repo: Repo) -> None:
    """Hooks for a repository that only a global ``git coral init --global`` set up (git/install.py).
    A hook that cannot be written never fails a filter run."""
    try:
        for line in ensure_hooks(repo):
            log(line)
    except Exception as exc:  # a read-only hooks folder, a full disk: the filter goes on
        if os.environ.get("CORAL_DEBUG"):
            log(f"could not install coral's hooks: {exc}")


class Spool:
    """Content received from git: in memory while small, else in a temp file read back through mmap.

    The whole-file hash is computed on the way in. For clean, a large safetensors file is not spooled
    at all: ``streamer`` turns the first bytes into a :class:`StreamingClean` that stores chunks as
    they arrive (falling back to the spool file if the file turns out not to be valid).
    """

    def __init__(
        self, tmpdir: str, streamer: Callable[[bytes], StreamingClean] | None = None, mem_limit: int = SPOOL_IN_MEMORY
    ) -> None:
        self.tmpdir = tmpdir
        self.mem_limit = mem_limit
        self.mem = bytearray()
        self.file: BinaryIO | None = None
        self.size = 0
        self._map: MappedFile | None = None
        self._hash = xxhash.xxh3_128()
        self._factory = streamer
        self.stream: StreamingClean | None = None

    @property
    def file_id(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._hash.update(data)
        if self.stream is not None:
            try:
                self.stream.feed(data)
                return
            except Fallback:  # loaded (_load) before any stream exists
                self._to_file()
        if self.file is None and len(self.mem) + len(data) <= self.mem_limit:
            self.mem += data
            return
        if self.file is None and self._factory is not None:
            factory, self._factory = self._factory, None  # one try per file
            head = bytes(self.mem) + data
            try:
                self.stream = factory(head)
            except FormatError:
                self.stream = None  # not a safetensors header: spool as usual
            else:
                self.mem = bytearray()
                self.stream.feed(head)
                return
        if self.file is None:
            self._open()
            self.file.write(self.mem)  # type: ignore[union-attr]
            self.mem = bytearray()
        self.file.write(data)  # type: ignore[union-attr]

    def _open(self) -> None:
        os.makedirs(self.tmpdir, exist_ok=True)
        self.file = tempfile.TemporaryFile(dir=self.tmpdir, prefix="spool-")

    def _to_file(self) -> None:
        """Leave streaming: write everything received so far into a spool file."""
        assert self.stream is not None
        self._open()
        self.stream.materialize(self.file)  # type: ignore[arg-type]
        self.stream = None

    def streamed(self) -> ptr.Pointer | None:
        """The pointer, when the content was cleaned while it streamed in."""
        if self.stream is None:
            return None
        try:
            return self.stream.finish(self.file_id)
        except Fallback:
            self._to_file()
            return None

    def view(self) -> bytes | MappedFile:
        """Small content as bytes; large content as a :class:`MappedFile` over the spool file."""
        if self.file is None:
            return bytes(self.mem)
        self.file.flush()
        _load()
        self._map = MappedFile(self.file.fileno())
        return self._map

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        if self._map is not None:
            self._map.close()
        if self.file is not None:
            self.file.close()


class Filter:
    """Clean and smudge bound to one repository."""

    def __init__(self, repo: Repo, fetcher: FetcherFactory | None = None) -> None:
        self.repo = repo
        self._fetcher = fetcher
        self.tmpdir = str(repo.store_root / "tmp")
        self._previous: dict[str, ptr.Pointer | None] = {}
        self._fetch_paths = None
        self.pending: direct.Pending | None = None
        # files a direct checkout just wrote (only set in the refresh it runs: read settings only then,
        # so a bad setting is reported per file, inside the protocol, not as a dead filter)
        self.fresh = fresh_pointers(repo.chunk_bytes) if os.environ.get(FRESH_ENV) else {}
        self._tracked: TrackedTensors | None = None
        # the store, codecs and settings below are set up on first use: a session that only re-checks
        # files it just cleaned is answered from the clean cache without them
        self.cache = CleanCache(repo.git_dir, repo.worktree, SPOOL_IN_MEMORY)
        self._stat: dict[str, str | None] = {}  # stat data of each file to clean, taken before git sends it

    @cached_property
    def store(self) -> ChunkStore:
        _load()
        store = self.repo.store
        if self._fetcher is not None:
            store.fetcher = self._fetcher(self.repo)  # missing chunks come from the remote store on demand
        return store

    @cached_property
    def candidates(self) -> int:
        """coral.baseCandidates: how many versions a tensor at a new path may try as its base (1: the
        most recently stored one only, no trial encode)."""
        _load()
        return self.repo.setting_int("coral.baseCandidates", MAX_CANDIDATES, 1, MAX_CANDIDATES)

    @cached_property
    def recent(self) -> RecentTensors:
        _load()
        return RecentTensors(self.repo.store_root / "recent", limit=self.candidates)

    @cached_property
    def _shards(self) -> ShardBases:
        _load()
        return ShardBases(self.repo)

    def _ready(self) -> None:
        """Load the clean/smudge machinery and open the store (with its remote fetcher)."""
        _load()
        self.store  # noqa: B018

    @property
    def wrote_objects(self) -> bool:
        """True when this session stored objects (without opening a store it never needed)."""
        return "store" in self.__dict__ and self.store.written > 0

    def previous(self, path: str) -> ptr.Pointer | None:
        """The pointer of ``path`` in the index (or HEAD): the delta base for its new version."""
        if path not in self._previous:
            self._previous[path] = self._read_previous(path)
        return self._previous[path]

    def base(self, path: str) -> ptr.Pointer | None:
        """:meth:`previous`, plus the tensors of old shards when ``path`` sits beside a shard index."""
        try:
            return self._shards.base(path, self.previous(path), self.repo.chunk_bytes)
        except Exception:  # a base is an optimisation: an unreadable index never fails a clean
            return self.previous(path)

    def tracked(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[tuple[str, ...]]:
        """Versions of a tensor that other paths hold in the index, HEAD or MERGE_HEAD (read on first use)."""
        if self.candidates == 1:
            return []
        if self._tracked is None:
            self._tracked = TrackedTensors(self.repo.objects)
        return self._tracked(name, dtype, shape, chunk_bytes)

    def _read_previous(self, path: str) -> ptr.Pointer | None:
        """The index's blob of ``path`` (stage 0), else HEAD's; read through git, never pygit2 (its import
        alone costs a filter start-up ~50 ms)."""
        try:
            for name in (f":{path}", f"HEAD:{path}"):
                found = self.repo.objects.read(name, ptr.MAX_POINTER)
                if found is not None:
                    return ptr.try_parse(found[1]) if found[1] is not None else None
            return None
        except Exception:
            return None

    def clean(self, data: bytes | MappedFile, path: str, file_id: str | None = None) -> bytes:
        res = clean(
            data,
            self.store,
            previous=self.base(path),
            recent=self.recent,
            chunk_bytes=self.repo.chunk_bytes,
            workers=self.repo.workers,
            file_id=file_id,
            tracked=self.tracked,
        )
        if res.new_chunks and res.pointer.format == "opaque":
            why = res.note or "format not recognised"
            log(f"{path}: stored as opaque bytes ({why})")
        return res.pointer.encode()

    def clean_spool(self, spool: Spool, path: str) -> bytes:
        """The pointer text for the file received in ``spool`` (streamed in, or cleaned now)."""
        streamed = spool.streamed()
        if streamed is not None:
            text = streamed.encode()
            self.cache.record(path, self._stat.pop(path, None), text)
            return self._keep_staged(text, path)
        self._ready()  # also for a cached spool whose content turned out to be another file
        data = spool.view()
        head = bytes(data.view()[:64]) if isinstance(data, MappedFile) else data[:64]
        if ptr.is_textconv(head):  # git blame of the work-tree file: not a model, give it back as it is
            return data if isinstance(data, bytes) else bytes(data.view())
        text = self.clean(data, path, spool.file_id)
        self.cache.record(path, self._stat.pop(path, None), text)
        return self._keep_staged(text, path)

    def _keep_staged(self, text: bytes, path: str) -> bytes:
        """The staged pointer when it names exactly these bytes in an older form, else ``text``.

        Older forms: version 1 (no check line), and fixed cuts of an opaque file (before
        content-defined chunking). A repository committed with them keeps its pointers: re-cleaning
        an unchanged file (``git status`` after a touch) must not show it as modified. The staged
        pointer is only kept when it describes the same bytes: the same whole-file id and size.
        """
        prev = self.previous(path)
        older = prev is not None and (prev.version == 1 or (prev.format == "opaque" and prev.cdc is None))
        if not older:
            return text
        p = ptr.parse(text)
        if (prev.size, prev.file_id, prev.format) != (p.size, p.file_id, p.format):
            return text
        if prev.version == 1 and replace(p, version=1) == prev:
            return prev.encode()
        if p.format == "opaque" and prev.cdc is None and p.cdc is not None:
            return prev.encode()
        return text

    def smudge(self, data: bytes | MappedFile, path: str, write: Callable[[memoryview], None]) -> None:
        view = data.view() if isinstance(data, MappedFile) else data
        if not ptr.looks_like_pointer(view) or os.environ.get("CORAL_SKIP_SMUDGE", "0") not in ("", "0") or not self.wants(path):
            # CORAL_SKIP_SMUDGE=1 leaves pointers; content that is not a pointer (committed before
            # coral, or plain text) goes out as it is
            if isinstance(data, MappedFile):
                for s in range(0, data.size, 1 << 20):
                    write(memoryview(data.read(s, min(s + (1 << 20), data.size))))
            else:
                write(memoryview(data))
            return
        try:
            p = ptr.parse(bytes(view))
        except CoralError as exc:
            # clean never stores such text (it would be stored as content): it was edited by hand or
            # damaged; writing it out as the model file would be wrong bytes, so refuse
            raise PointerError(
                f"the stored pointer is damaged ({exc}); restore it, e.g. 'git checkout <good-rev> -- {path}'"
            ) from None
        from . import direct  # smudge only (a clean session never loads it)

        if path and direct.wants_direct(self.repo, p):
            # too large to pass through git's memory: git gets the pointer, coral writes the file
            # itself once git is done (see filter/direct.py)
            if self.pending is None:
                self.pending = direct.Pending(self.repo)
            self.pending.add(path, p)
            write(memoryview(bytes(view)))
            return
        smudge(p, self.store, write, path=path, workers=self.repo.workers)

    def wants(self, path: str) -> bool:
        """False for paths coral.fetchInclude/fetchExclude leave out: they check out as pointers."""
        if self._fetch_paths is None:
            from .fetchpaths import fetch_paths

            self._fetch_paths = fetch_paths(self.repo.worktree or self.repo.git_dir, self.repo.worktree)
        return self._fetch_paths.wants(path)

    def finish(self) -> None:
        """Write the files handed to git as pointers (git waits for its filter to exit)."""
        if self.pending is not None:
            self.pending.finish()
        self.cache.save()
        self.repo.objects.close()

    def spool(self, command: str = "", path: str = "") -> Spool | FreshSpool:
        """Where the content of one file goes; for clean, large safetensors files stream instead."""
        if command == "clean" and path in self.fresh:
            return FreshSpool(self.fresh[path], path)
        if command == "clean":
            key = self._stat[path] = self.cache.stat_key(path)
            try:
                hit = self.cache.lookup(path, key, lambda: self.repo.chunk_bytes)
            except CoralError:  # e.g. a chunk size .coralconfig disagrees with: the clean reports it per file
                hit = None
            if hit is not None:
                return CachedSpool(hit, self.repo.store_root, Spool(self.tmpdir))
        self._ready()
        if command != "clean" or os.environ.get("CORAL_NO_STREAM"):
            return Spool(self.tmpdir)

        def streamer(head: bytes) -> StreamingClean:
            return StreamingClean(
                head,
                self.store,
                previous=self.base(path),
                recent=self.recent,
                chunk_bytes=self.repo.chunk_bytes,
                workers=self.repo.workers,
                tracked=self.tracked,
            )

        return Spool(self.tmpdir, streamer)


def _report(exc: BaseException, path: str) -> None:
    if isinstance(exc, CoralError):
        log(f"{path}: {exc}")
    else:
        log(f"{path}: internal error ({type(exc).__name__}: {exc}); rerun with CORAL_DEBUG=1 for details")
    if os.environ.get("CORAL_DEBUG"):
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


PIPE_BYTES = 1 << 20  # git's pipes to the filter: the default 64 KiB is one packet, a context switch each


def _widen_pipes() -> None:
    """Let git run up to 1 MiB ahead of the filter (and back) instead of one packet (Linux pipes)."""
    for f in (sys.stdin, sys.stdout):
        try:
            fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        except (OSError, ValueError, AttributeError):
            pass  # not a pipe, not Linux, or over the user's pipe quota: the default size works


def filter_process(fetcher: FetcherFactory | None = None) -> int:
    """Serve git's long-running filter protocol on stdin/stdout until git closes the pipe."""
    _widen_pipes()
    rd = PktReader(sys.stdin.buffer)
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but protocol bytes may reach git's pipe
    wr = PktWriter(out)
    try:
        hello = rd.read_text_list()
    except EOFError:
        log("filter-process: no filter protocol on stdin; git starts this command itself (filter.coral.process)")
        return 1
    if "git-filter-client" not in hello or "version=2" not in hello:
        log("filter-process: git did not offer protocol version 2")
        return 1
    wr.text("git-filter-server")
    wr.text("version=2")
    wr.flush()
    caps = rd.read_text_list()
    delay = "capability=delay" in caps and os.environ.get("CORAL_NO_DELAY", "0") in ("", "0")
    for cap in ("clean", "smudge", "delay"):
        if f"capability={cap}" in caps and (cap != "delay" or delay):
            wr.text(f"capability={cap}")
    wr.flush()
    flt = Filter(find_repo(), fetcher)
    _ensure_hooks(flt.repo)
    delayed = None
    if delay:
        from .delayed import DEFAULT_FILES, DelayedSmudges

        files = flt.repo.setting_int("coral.concurrentTransfers", DEFAULT_FILES, 1, 64)
        delayed = DelayedSmudges(lambda data, path, write: flt.smudge(data, path, write), flt.tmpdir, files)
    try:
        return _loop(rd, wr, flt, delayed)
    finally:
        if delayed is not None:
            delayed.close()


def _loop(rd: PktReader, wr: PktWriter, flt: Filter, delayed) -> int:
    while True:
        try:
            header = rd.read_text_list()
        except EOFError:
            flt.finish()
            if flt.wrote_objects:  # the session stored objects: maybe time for maintenance
                from ..git.autogc import maybe_spawn  # here: only sessions that stored objects pay its imports

                maybe_spawn(flt.repo)
            return 0
        meta = dict(item.partition("=")[::2] for item in header)
        command, path = meta.get("command", ""), meta.get("pathname", "")
        if command == "list_available_blobs":
            for ready in delayed.available() if delayed is not None else []:
                wr.text(f"pathname={ready}")
            wr.flush()
            wr.text("status=success")
            wr.flush()
            continue
        spool = flt.spool(command, path)
        meter = ByteMeter(f"adding {path}") if command == "clean" else None
        failed: OSError | CoralError | None = None
        try:
            for pkt in rd.content():
                if meter is not None:
                    meter.add(len(pkt))
                if failed is None:
                    try:
                        spool.write(pkt)
                    except (OSError, CoralError) as exc:
                        failed = exc  # keep reading: git is still sending this file
            if failed is not None:
                if isinstance(failed, CoralError):
                    _report(failed, path)
                else:
                    _report(StoreError(f"cannot hold the file in {flt.tmpdir}: {failed.strerror or failed}"), path)
                wr.text("status=error")
                wr.flush()
                continue
            if delayed is not None and command == "smudge" and path in delayed:
                _serve_delayed(flt, delayed, wr, path)
            elif (delayed is not None and command == "smudge" and meta.get("can-delay") == "1"
                  and _worth_delaying(spool)):
                delayed.submit(path, bytes(spool.view()))
                wr.text("status=delayed")
                wr.flush()
            else:
                _serve(flt, wr, command, path, spool)
        finally:
            if meter is not None:
                meter.close()
            spool.close()


def _serve(flt: Filter, wr: PktWriter, command: str, path: str, spool: Spool | FreshSpool) -> None:
    if command == "clean":
        try:
            result = flt.clean_spool(spool, path)
        except Exception as exc:
            _report(exc, path)
            wr.text("status=error")
            wr.flush()
            return
        wr.text("status=success")
        wr.flush()
        wr.data(result)
        wr.flush()
        wr.flush()
        return
    data = spool.view()
    if command != "smudge":
        log(f"unknown filter command {command!r}")
        wr.text("status=error")
        wr.flush()
        return
    started = False

    def write(chunk: memoryview) -> None:
        nonlocal started
        if not started:
            wr.text("status=success")
            wr.flush()
            started = True
        wr.data(chunk)

    try:
        flt.smudge(data, path, write)
    except Exception as exc:
        _report(exc, path)
        if started:
            wr.flush()  # end of content; then the status that makes git discard it
        wr.text("status=error")
        wr.flush()
        return
    if not started:
        wr.text("status=success")
        wr.flush()
    wr.flush()
    wr.flush()


def _worth_delaying(spool: Spool) -> bool:
    """Only pointers go to the background (small content that is not one is passed through at once)."""
    if spool.file is not None or os.environ.get("CORAL_SKIP_SMUDGE", "0") not in ("", "0"):
        return False
    return ptr.looks_like_pointer(bytes(spool.mem))


def _serve_delayed(flt: Filter, delayed, wr: PktWriter, path: str) -> None:
    """git asks again for a file it was told is ready: stream it from its temp file."""
    pointer = delayed.pointer(path)
    try:
        done = delayed.take(path)
    except OSError:
        # the temp file could not be written (e.g. disk full): smudge straight into git's pipe instead
        spool = Spool(flt.tmpdir)
        try:
            spool.write(pointer)
            _serve(flt, wr, "smudge", path, spool)
        finally:
            spool.close()
        return
    except Exception as exc:
        _report(exc, path)
        wr.text("status=error")
        wr.flush()
        return
    try:
        wr.text("status=success")
        wr.flush()
        with open(done, "rb") as f:
            while block := f.read(1 << 20):
                wr.data(memoryview(block))
        wr.flush()
        wr.flush()
    finally:
        done.unlink(missing_ok=True)


def single(command: str, path: str, fetcher: FetcherFactory | None = None) -> int:
    """``git coral clean|smudge PATH``: one file from stdin to stdout (git's clean/smudge fallback)."""
    out = sys.stdout.buffer
    sys.stdout = sys.stderr
    flt = Filter(find_repo(), fetcher)
    _ensure_hooks(flt.repo)
    spool = flt.spool(command, path)
    try:
        while chunk := sys.stdin.buffer.read(1 << 20):
            spool.write(chunk)
        if command == "clean":
            out.write(flt.clean_spool(spool, path))
        else:
            flt.smudge(spool.view(), path, out.write)
        out.flush()
        return 0
    except Exception as exc:
        _report(exc, path)
        return 1
    finally:
        spool.close()
