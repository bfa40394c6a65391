"""Recently stored tensors by (name, dtype, shape): delta base candidates for a file at a new path.

One append-only file, ``recent/log``: an add appends one record per new tensor version in a single
``write`` (a thousand-tensor model used to cost a thousand small files per add, and their inode
allocations were 14% of an add's time). Each record is ``\\n<signature key> <id>,<id>,…``: the
leading newline isolates a record torn by a crash, and a reader skips any line that does not parse,
so damage costs a hint, never an add. Readers keep the last ``keep`` versions per signature, newest
last in the file. When the file holds more than twice what it needs, an add rewrites it with only
that (under an exclusive ``flock`` on it; appenders hold a shared one and re-open if it was replaced).
The older layout, a file per signature (``recent/ab/cdef…``), is still read for signatures the log
does not know.
"""

from __future__ import annotations

import fcntl
import os
import re
import threading
from pathlib import Path

import xxhash

KEEP = 4  # versions kept per signature: enough candidates to find a common base, few enough to try them all
LOG = "log"
COMPACT_OVER = 1 << 20  # bytes of log below which it is never rewritten
_RECORD = re.compile(rb"([0-9a-f]{16}) ([0-9a-f]{32}(?:,[0-9a-f]{32})*)")


class RecentTensors:
    """A small table ``signature → chunk ids of the last KEEP versions stored`` (newest first)."""

    def __init__(self, root: Path, keep: int = KEEP, limit: int = KEEP) -> None:
        self.root = root
        self.keep = keep  # versions written
        self.limit = limit  # versions read back as candidates
        self._table: dict[str, list[list[str]]] = {}  # key -> versions, newest first
        self._seen: tuple[int, int] | None = None  # (inode, bytes parsed) of the log read so far
        self._lock = threading.Lock()
        self._log = os.path.join(root, LOG)  # a str: a new path's clean looks here once per tensor
        self._legacy: bool | None = None  # whether the older layout's directories exist (looked once)

    @staticmethod
    def key(name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> str:
        return xxhash.xxh3_64_hexdigest(f"{name}\0{dtype}\0{shape}\0{chunk_bytes}".encode())

    def _path(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> Path:
        key = self.key(name, dtype, shape, chunk_bytes)
        return self.root / key[:2] / key[2:]

    # -- reading ---------------------------------------------------------------------------------
    def get_all(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[list[str]]:
        """The versions kept (at most ``limit``), newest first."""
        return self._read(name, dtype, shape, chunk_bytes)[: self.limit]

    def get(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[str] | None:
        """The newest version kept, or None."""
        versions = self.get_all(name, dtype, shape, chunk_bytes)
        return versions[0] if versions else None

    def _read(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[list[str]]:
        self._refresh()
        found = self._table.get(self.key(name, dtype, shape, chunk_bytes))
        if found is not None:
            return list(found)
        if self._legacy is None:
            try:
                self._legacy = any(len(e.name) == 2 and e.is_dir() for e in os.scandir(self.root))
            except OSError:
                self._legacy = False
        if not self._legacy:
            return []
        try:  # the older layout: a file per signature
            text = self._path(name, dtype, shape, chunk_bytes).read_text()
        except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
            return []
        return [line.split(",") for line in text.splitlines() if line]

    def _refresh(self) -> None:
        """Parse what was appended to the log since the last look (all of it if it was replaced)."""
        with self._lock:
            try:
                st = os.stat(self._log)  # the common case: nothing new, one syscall
            except (FileNotFoundError, NotADirectoryError):
                self._table, self._seen = {}, None
                return
            if self._seen is not None and self._seen == (st.st_ino, st.st_size):
                return
            try:
                with open(self._log, "rb") as f:
                    st = os.fstat(f.fileno())
                    if self._seen is not None and self._seen[0] == st.st_ino and st.st_size >= self._seen[1]:
                        start = self._seen[1]
                    else:
                        self._table, start = {}, 0
                    f.seek(start)
                    data = f.read()
            except (FileNotFoundError, NotADirectoryError):
                self._table, self._seen = {}, None
                return
            end = data.rfind(b"\n") + 1  # each write ends with a newline: a tail without one is
            self._merge(data[:end].split(b"\n"))  # still being written (or torn): read it next time
            self._seen = (st.st_ino, start + end)

    def _merge(self, lines: list[bytes]) -> None:
        for line in lines:
            m = _RECORD.fullmatch(line)
            if m is None:
                continue
            key, ids = m.group(1).decode(), m.group(2).decode().split(",")
            old = self._table.get(key, [])
            self._table[key] = ([ids] + [v for v in old if v != ids])[: self.keep]

    # -- writing ---------------------------------------------------------------------------------
    def set(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int, ids: list[str]) -> None:
        """Record ``ids`` as the newest version of one signature."""
        self.set_many([((name, dtype, shape, chunk_bytes), ids)])

    def set_many(self, updates: list[tuple[tuple[str, str, tuple[int, ...], int], list[str]]]) -> None:
        """Record new versions, one per signature, in one append (a lost race between two adds or
        a full disk only loses a hint: nothing here is needed to read anything)."""
        if not updates:
            return
        records = b"".join(f"\n{self.key(*sig)} {','.join(ids)}".encode() for sig, ids in updates) + b"\n"
        path = self.root / LOG
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for _ in range(3):
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH)
                    try:
                        if os.fstat(fd).st_ino != os.stat(path).st_ino:
                            continue  # compacted under us: append to the new file
                    except FileNotFoundError:
                        continue
                    view = memoryview(records)
                    while view:
                        view = view[os.write(fd, view) :]
                    size = os.fstat(fd).st_size
                    break
                finally:
                    os.close(fd)
            else:
                return
        except OSError:
            return
        if size > COMPACT_OVER:
            self._maybe_compact()

    def _kept(self) -> bytes:
        """The log holding only what readers keep (oldest first, so the newest wins on reading)."""
        return b"".join(f"\n{k} {','.join(v)}".encode() for k, vs in self._table.items() for v in reversed(vs)) + b"\n"

    def _maybe_compact(self) -> None:
        """Rewrite the log with only the versions readers keep, when it holds twice as much."""
        self._refresh()
        kept = self._kept()
        path = self.root / LOG
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            if os.fstat(fd).st_size < 2 * len(kept):
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return  # another add is appending or compacting: next time
            self._refresh()  # records appended before the lock was taken are kept
            kept = self._kept()
            tmp = self.root / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"
            try:
                tmp.write_bytes(kept)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)
        finally:
            os.close(fd)
