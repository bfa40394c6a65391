"""Clean of a file coral has just written itself: one hash pass instead of a full clean.

After a direct checkout (filter/direct.py) the index must learn the new file's stat data, and git can
only do that by cleaning the file again. The writer lists what it wrote (``path NUL pointer NUL``
records) in the file named by ``CORAL_DIRECT_FRESH`` for that one ``git update-index`` call; clean
of such a path only hashes what git sends and answers the recorded pointer when the whole-file
hash and size match (the pointer of those bytes, already verified on the way out). Anything else
is refused, so git records nothing and the next ``git status`` cleans the file the normal way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import xxhash

from ..core import pointer as ptr
from ..errors import StoreError

ENV = "CORAL_DIRECT_FRESH"


def fresh_pointers(chunk_bytes: int) -> dict[str, ptr.Pointer]:
    """The records of the file ``CORAL_DIRECT_FRESH`` names (only pointers of this chunk size)."""
    name = os.environ.get(ENV)
    if not name:
        return {}
    try:
        with open(name, "rb") as f:
            parts = f.read().split(b"\0")
    except OSError:
        return {}
    out = {}
    for path, text in zip(parts[0::2], parts[1::2], strict=False):
        p = ptr.parse_or_none(text)
        if p is not None and p.chunk_bytes == chunk_bytes:
            out[path.decode("utf-8", "surrogateescape")] = p
    return out


class FreshSpool:
    """A Spool look-alike that only hashes: the content is expected to be ``pointer``'s file."""

    def __init__(self, pointer: ptr.Pointer, path: str) -> None:
        self.pointer = pointer
        self.path = path
        self.size = 0
        self._hash = xxhash.xxh3_128()

    @property
    def file_id(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._hash.update(data)

    def streamed(self) -> ptr.Pointer:
        if self.size != self.pointer.size or self.file_id != self.pointer.file_id:
            raise StoreError(f"{self.path} changed while coral refreshed its index entry; 'git status' will re-check it")
        return self.pointer

    def view(self) -> bytes:
        raise StoreError("internal error: a fresh file is only ever cleaned")

    def close(self) -> None:
        pass


# -- the clean cache: re-cleans of a file this work tree just cleaned ---------------------------------
# ``git commit`` right after ``git add`` (and ``git status``) cleans a file again when its mtime is not
# older than the index ("racily clean"): a whole filter start-up (numpy, the store, codecs) to re-derive
# a pointer coral returned a moment ago. Each clean records ``path → (stat data, pointer)`` here; a clean
# request whose file still has the recorded stat data is answered by hashing what git sends and
# returning the recorded pointer only when the whole-file hash and size match and every chunk it names
# is in the store. The stat data only picks this path (a file rewritten within the same timestamp tick
# with the same size still matches them); the hash decides. On any mismatch the content received is
# cleaned the normal way: nothing stale is ever returned. Files up to ``CACHED_MAX`` bytes only (held
# in memory while hashed; for larger files the start-up is noise beside the clean itself).
CACHE_FILE = "coral-cleaned"  # in the git dir: one per work tree (paths are work-tree relative)
CACHE_MAGIC = b"coral-clean-cache 1 "  # + the pointer version: pointers of another version are not reused
CACHE_ENTRIES = 256


class CleanCache:
    """``path → (stat key, pointer text)`` of this work tree's latest cleans (``.git/coral-cleaned``)."""

    def __init__(self, git_dir: Path, worktree: Path | None, limit: int) -> None:
        self.file = git_dir / CACHE_FILE
        self.worktree = worktree
        self.limit = limit
        self._entries: dict[str, tuple[str, bytes]] | None = None
        self._new: dict[str, tuple[str, bytes]] = {}

    def stat_key(self, path: str) -> str | None:
        """The stat data of the work-tree file ``path`` (None: no regular file, no work tree)."""
        if self.worktree is None or not path:
            return None
        try:
            st = os.lstat(self.worktree / path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode) or st.st_size > self.limit:
            return None
        return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino} {st.st_dev}"

    def lookup(self, path: str, key: str | None, chunk_bytes: Callable[[], int]) -> ptr.Pointer | None:
        """The recorded pointer of ``path`` when the file still has the stat data recorded with it."""
        if key is None:
            return None
        rec = self._new.get(path) or self._load().get(path)  # this session's own cleans first
        if rec is None or rec[0] != key:
            return None
        p = ptr.parse_or_none(rec[1])
        if p is None or p.size > self.limit or p.chunk_bytes != chunk_bytes():
            return None
        return p

    def record(self, path: str, key: str | None, text: bytes) -> None:
        """Remember the pointer a clean returned for the file ``path`` had stat data ``key`` (before)."""
        if key is not None and int(key.split(" ", 1)[0]) <= self.limit:
            self._new[path] = (key, text)

    def save(self) -> None:
        """Merge this session's records into the file (atomically; a lost race only loses records)."""
        if not self._new:
            return
        entries = dict(self._read())
        for path, rec in self._new.items():
            entries.pop(path, None)
            entries[path] = rec  # newest last
        keep = list(entries.items())[-CACHE_ENTRIES:]
        body = [_magic()]
        for path, (key, text) in keep:
            body += [path.encode("utf-8", "surrogateescape"), key.encode(), text]
        tmp = self.file.with_name(f"{CACHE_FILE}.{os.getpid()}.tmp")
        try:
            tmp.write_bytes(b"\0".join(body) + b"\0")
            os.replace(tmp, self.file)
        except OSError:  # a cache: a read-only or full git dir only costs the next re-clean its speed
            tmp.unlink(missing_ok=True)
        self._new.clear()
        self._entries = None

    def _load(self) -> dict[str, tuple[str, bytes]]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, tuple[str, bytes]]:
        try:
            parts = self.file.read_bytes().split(b"\0")
        except OSError:
            return {}
        if not parts or parts[0] != _magic():
            return {}
        body = parts[1:-1]
        out: dict[str, tuple[str, bytes]] = {}
        for i in range(0, len(body) - 2, 3):
            out[body[i].decode("utf-8", "surrogateescape")] = (body[i + 1].decode(), body[i + 2])
        return out


def _magic() -> bytes:
    """The cache's header: its format, the pointer version and :func:`_code_stamp`."""
    return CACHE_MAGIC + f"{ptr.VERSION} {_code_stamp()}".encode()


_STAMP: list[int] = []


def _code_stamp() -> int:
    """The newest modification time of the modules a pointer depends on (clean, chunking, format
    readers): records written by other code (an upgrade, an edit of an editable install) are not
    reused, so a re-check returns what this code's clean would. ~40 stats, once per process."""
    if not _STAMP:
        pkg = Path(__file__).resolve().parent.parent
        newest = 0
        for sub in ("filter", "formats", "core", "store"):
            try:
                with os.scandir(pkg / sub) as it:
                    newest = max([newest, *(e.stat().st_mtime_ns for e in it if e.name.endswith(".py"))])
            except OSError:
                pass
        _STAMP.append(newest)
    return _STAMP[0]


def stored(root: Path, ids: set[str]) -> bool:
    """True when every object in ``ids`` is in the store at ``root`` (loose or packed), read without
    opening a ChunkStore (which loads numpy and the codecs)."""
    from ..store.objects import LooseObjects

    loose = LooseObjects(root / "objects")
    missing = [c for c in ids if not loose.has(c)]
    if not missing:
        return True
    from ..store.packs import PackSource

    packs = PackSource(root / "packs")
    return all(packs.has(c) for c in missing)


class CachedSpool:
    """A clean whose file still has the stat data of a recorded clean: ``inner`` (a Spool) receives and
    hashes the content; :meth:`streamed` is the recorded pointer when the content is its file, else
    None and the caller cleans ``inner``'s content the normal way."""

    def __init__(self, pointer: ptr.Pointer, store_root: Path, inner) -> None:
        self.pointer = pointer
        self.store_root = store_root
        self.inner = inner

    @property
    def file_id(self) -> str:
        return self.inner.file_id

    @property
    def size(self) -> int:
        return self.inner.size

    @property
    def file(self):
        return self.inner.file

    def write(self, data: bytes | memoryview) -> None:
        self.inner.write(data)

    def streamed(self) -> ptr.Pointer | None:
        p = self.pointer
        if self.inner.size != p.size or self.inner.file_id != p.file_id:
            return None
        try:
            return p if stored(self.store_root, p.chunk_ids()) else None
        except Exception:  # an unreadable pack: the normal clean decides
            return None

    def view(self):
        return self.inner.view()

    def close(self) -> None:
        self.inner.close()
