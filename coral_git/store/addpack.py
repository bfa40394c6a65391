"""The pack one ``git add`` of a large file writes its new objects into (pack format version 2)."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import xxhash

from ..errors import StoreError
from .objects import HEADER_SIZE, start_writeback
from .packformat import HEADER, MAGIC, SUFFIX, VERSION_ADD, fsync_dir, index_of


class AddPack:
    """The pack one ``git add`` of a large file streams its new objects into (format version 2).

    Objects are appended to a temp file as they are encoded (many threads; ``pwrite`` at offsets
    handed out under a lock) and are readable from it at once, so later chunks of the same add
    find them (dedup) and can use them as bases. :meth:`finish` appends the index, patches the
    header, fsyncs and renames the file into ``packs/``: from then on it is an ordinary pack, and
    until then it is a ``.tmp-pack-*`` file that nothing else reads and gc removes once no add holds
    its lock (the add died). No loose
    file per object, and nothing for gc to re-read and re-write later."""

    WRITEBACK = 32 << 20  # bytes appended between two "start writing back" hints to the kernel

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / f"{TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o444)
        # held until the fd closes (the kernel drops it when the add dies): gc removes a temp pack
        # nobody holds at once, and never one an add is still writing, however old (writer_gone)
        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.pos = HEADER.size
        self.table: dict[str, tuple[int, int, int]] = {}  # id -> (offset, length, xxh3-64), once written
        self.busy: set[str] = set()  # ids being written right now
        self.lock = threading.Lock()
        self.mtime = int(time.time())
        self.flushed = HEADER.size  # the file up to here was handed to writeback
        self.bytes = 0  # stored bytes appended
        self.raw_bytes = 0  # content bytes they hold

    def has(self, cid: str) -> bool:
        with self.lock:
            return cid in self.table or cid in self.busy

    def add(self, cid: str, data: bytes, raw_len: int = 0) -> bool:
        """Append object ``cid`` (``raw_len`` bytes of content) unless this pack has it (or is
        writing it); True when appended."""
        with self.lock:
            if cid in self.table or cid in self.busy:
                return False
            self.busy.add(cid)
            at = self.pos
            self.pos += len(data)
        try:
            view = memoryview(data)
            done = 0
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], at + done)
        except BaseException as exc:
            with self.lock:
                self.busy.discard(cid)  # the bytes stay as a dead gap; the index never names them
            if isinstance(exc, OSError):
                raise StoreError(f"cannot write to {self.root}: {exc.strerror or exc}") from exc
            raise
        checksum = xxhash.xxh3_64_intdigest(data)
        with self.lock:
            self.busy.discard(cid)
            self.table[cid] = (at, len(data), checksum)
            self.bytes += len(data)
            self.raw_bytes += raw_len
            flush = self.pos - self.flushed >= self.WRITEBACK
            if flush:  # hint the region appended since the last hint, not the whole file again
                flush_at, flush_to = self.flushed, self.pos
                self.flushed = flush_to
        if flush:
            start_writeback(self.fd, flush_at, flush_to - flush_at)
        return True

    def read(self, cid: str, n: int = -1) -> bytes | None:
        with self.lock:
            found = self.table.get(cid)
        if found is None:
            return None
        at, length, _ = found
        return os.pread(self.fd, length if n < 0 else min(n, length), at)

    def read_header(self, cid: str) -> bytes | None:
        return self.read(cid, HEADER_SIZE)

    def items(self) -> list[tuple[str, int, int]]:
        """``(id, offset, length)`` of every object written, in file order."""
        with self.lock:
            return sorted(((c, at, n) for c, (at, n, _) in self.table.items()), key=lambda r: r[1])

    def finish(self) -> Path | None:
        """Index, header, fsync, rename into ``packs/``, fsync the directory; the pack's path
        (None, and the temp file gone, when nothing was written)."""
        with self.lock:
            assert not self.busy, "finish() while objects are still being written"
            rows = [(bytes.fromhex(c), at, n, self.mtime, ck) for c, (at, n, ck) in self.table.items()]
            index_at = self.pos
        if not rows:
            self.abort()
            return None
        try:
            index, digest = index_of(rows)
            os.pwrite(self.fd, index, index_at)
            os.pwrite(self.fd, HEADER.pack(MAGIC, VERSION_ADD, len(rows), index_at, digest), 0)
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            final = self.root / f"pack-{digest.hex()}{SUFFIX}"
            os.replace(self.tmp, final)
            fsync_dir(self.root)
            return final
        except BaseException as exc:
            self.abort()
            if isinstance(exc, OSError):
                raise StoreError(f"cannot write to {self.root}: {exc.strerror or exc}") from exc
            raise

    def abort(self) -> None:
        """Drop the temp file (nothing in it was handed to git)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


TMP_PREFIX = ".tmp-pack-"


def writer_gone(path: Path) -> bool | None:
    """For an add's temp pack: True when no process holds it (its add died: the file is garbage),
    False while an add is writing it, None when it is gone or cannot be checked."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)
