"""Direct checkout: large files are written into the work tree by coral, not through git.

git reads a smudge filter's whole output into memory before writing the file, so a 70 GB model
needs 70 GB of RAM. Above ``coral.directCheckoutSize`` smudge hands git the pointer text instead
and records the path as *pending*; once git is done (the filter process's end, which git waits for,
or the post-checkout/post-merge/post-rewrite hooks for pending paths of a filter that died), coral
streams the content to a temp file in the same directory, fsyncs it, renames it over the pointer
and refreshes the index entry. A kill at any moment leaves the pointer (which ``git status`` rightly
calls clean: it is what the index holds) or the whole file, never a partial model.
See docs/scale.md.
"""

from __future__ import annotations

import os
import secrets
import stat
import time
from pathlib import Path

from ..core import pointer as ptr
from ..errors import CoralError
from ..git.pointers import pointer_blobs
from ..git.repo import Repo, run_git
from ..store.objects import start_writeback
from ..ui import log

DEFAULT_DIRECT_SIZE = 512 << 20  # docs/scale.md: no slower than through git at 0.5-2 GB, memory bounded
WRITE_BATCH = 8 << 20  # bytes written between two hints to start writeback
FINISH = "run 'git coral pull' to finish"
MTIME_SLACK_NS = 2 * 10**9  # file systems with coarse timestamps


def direct_size(repo: Repo) -> int:
    """Files of at least this many bytes are checked out directly (0 turns direct checkout off)."""
    return repo.setting_int("coral.directCheckoutSize", DEFAULT_DIRECT_SIZE, 0, 1 << 60)


def wants_direct(repo: Repo, p: ptr.Pointer) -> bool:
    size = direct_size(repo)
    return size > 0 and p.size >= size and os.environ.get("CORAL_DIRECT_ACTIVE") is None


# -- pending paths ----------------------------------------------------------------------------------
def pending_dir(repo: Repo) -> Path:
    return repo.git_dir / "coral-direct"


class Pending:
    """The files one process handed to git as pointers, also kept in ``coral-direct/<pid>``
    (``path NUL time-ns NUL pointer NUL`` records) so that the hooks can finish them if this process dies first."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.items: dict[str, tuple[ptr.Pointer, int]] = {}
        self.file = pending_dir(repo) / str(os.getpid())

    def add(self, path: str, p: ptr.Pointer) -> None:
        if path in self.items and self.items[path][0] == p:
            return
        since = time.time_ns()
        self.items[path] = (p, since)
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.file, "ab") as f:
            f.write(b"%s\0%d\0%s\0" % (path.encode("utf-8", "surrogateescape"), since, p.encode()))

    def finish(self) -> int:
        """Write every pending file; return how many failed (each already reported)."""
        if not self.items:
            return 0
        failed = materialize(self.repo, [(path, p, t) for path, (p, t) in self.items.items()])
        self.file.unlink(missing_ok=True)
        self.items = {}
        return failed


def read_pending(f: Path) -> dict[str, tuple[ptr.Pointer, int]]:
    """The records of one pending list (the last one per path wins; a torn last record is dropped)."""
    out: dict[str, tuple[ptr.Pointer, int]] = {}
    parts = f.read_bytes().split(b"\0")
    for name, since, text in zip(parts[0::3], parts[1::3], parts[2::3], strict=False):
        p = ptr.parse_or_none(text)
        if name and since.isdigit() and p is not None:
            out[name.decode("utf-8", "surrogateescape")] = (p, int(since))
    return out


def orphaned(repo: Repo) -> list[tuple[Path, dict[str, tuple[ptr.Pointer, int]]]]:
    """Pending lists whose process is gone (killed, or a single-file smudge that exited)."""
    out = []
    d = pending_dir(repo)
    if not d.is_dir():
        return out
    for f in sorted(d.iterdir()):
        if not f.name.isdigit() or _alive(int(f.name)):
            continue
        try:
            out.append((f, read_pending(f)))
        except OSError:
            continue
    return out


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running coral process (a killed one may linger as a zombie until its
    new parent reaps it; a recycled pid belongs to some other program)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            if f.read().rpartition(b")")[2].split()[0] == b"Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"coral" in f.read()
    except (OSError, IndexError):
        return True  # no /proc here: trust kill(0)


def finish_orphans(repo: Repo) -> int:
    """Materialize the files of dead processes' pending lists; the hooks' step."""
    failed = 0
    for f, items in orphaned(repo):
        failed += materialize(repo, [(path, p, t) for path, (p, t) in items.items()])
        f.unlink(missing_ok=True)
    return failed


# -- writing ----------------------------------------------------------------------------------------
def materialize(repo: Repo, items: list[tuple[str, ptr.Pointer, int]]) -> int:
    """Replace each work-tree file that still holds exactly its pointer by the content; refresh the index.

    ``items`` are ``(path, pointer, time smudge handed it out in ns)``. A file that changed since,
    or that was not written after that time (a pointer left by ``CORAL_SKIP_SMUDGE`` long ago, met
    by a smudge for ``git diff``), is left alone. The index entry is
    refreshed only where it is that same pointer (after ``stash pop`` the work tree may hold a
    version the index does not). Returns the number of failures.
    """
    if repo.worktree is None or not items:
        return 0
    done: list[tuple[str, ptr.Pointer]] = []
    failed = 0
    for path, p, since in items:
        if not _holds_pointer(repo.worktree / path, p, since):
            continue
        try:
            write_file(repo, path, p)
            done.append((path, p))
        except (CoralError, OSError) as exc:
            failed += 1
            log(f"{path}: left as a pointer ({exc}); {FINISH}")
    if done:
        staged = index_pointers(repo, [path for path, _ in done])
        fresh = [(path, p) for path, p in done if staged.get(path) == p]
        if fresh:
            refresh_index(repo, fresh)
    return failed


def index_pointers(repo: Repo, paths: list[str]) -> dict[str, ptr.Pointer]:
    """The pointer of each path's stage-0 index entry (paths in conflict or not pointers: absent)."""
    assert repo.worktree is not None
    proc = run_git(["--literal-pathspecs", "ls-files", "-s", "-z", "--", *paths], repo.worktree)
    blobs: dict[str, str] = {}
    conflicted: set[str] = set()
    for item in proc.stdout.decode(errors="surrogateescape").split("\0"):
        if not item:
            continue
        meta, _, path = item.partition("\t")
        _mode, oid, stage = meta.split()
        if stage != "0":
            conflicted.add(path)
        else:
            blobs[path] = oid
    return dict(pointer_blobs(repo.worktree, [(o, pa) for pa, o in blobs.items() if pa not in conflicted]))


def _holds_pointer(f: Path, p: ptr.Pointer, since: int) -> bool:
    want = p.encode()
    try:
        st = f.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(want) or st.st_mtime_ns < since - MTIME_SLACK_NS:
            return False
        return f.read_bytes() == want
    except OSError:
        return False


def write_file(repo: Repo, path: str, p: ptr.Pointer) -> None:
    """Write the content of ``p`` over the file at ``path``: temp file beside it, fsync, rename.

    Memory stays bounded (chunks stream through); the rename is the only moment the file changes,
    and only if the file still holds exactly that pointer.
    """
    from .smudge import smudge

    assert repo.worktree is not None
    final = repo.worktree / path
    _remove_stale_temps(final)
    tmp = final.parent / f".{final.name}.coral-{os.getpid()}-{secrets.token_hex(3)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, p.size)  # one extent where the file system can; ENOSPC up front
        except OSError as exc:
            if exc.errno not in (95, 22):  # EOPNOTSUPP / EINVAL: not supported here, write anyway
                raise
        out = _BatchWriter(fd)
        smudge(p, repo.store, out.write, path=path, workers=repo.workers)
        out.flush()
        os.fsync(fd)
        os.fchmod(fd, os.stat(final).st_mode & 0o7777)
        os.close(fd)
        fd = -1
        if not _holds_pointer(final, p, 0):
            # edited (or checked out again) while coral wrote: that newer file wins
            raise CoralError("the file changed while coral was writing it; it was left as it is")
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)


class _BatchWriter:
    """Writes each chunk smudge emits with one writev(2), together with the small pieces before it.

    Small pieces (skeleton bytes between tensors) are copied and gathered; a chunk goes out at once,
    before ``write`` returns: smudge reuses its buffer for a later chunk."""

    SMALL = 64 << 10

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.parts: list[bytes | memoryview] = []
        self.n = 0  # bytes in ``parts``
        self.unflushed = 0  # bytes written since writeback was last started

    def write(self, mv: memoryview) -> None:
        if len(mv) < self.SMALL:
            self.parts.append(bytes(mv))
            self.n += len(mv)
            if self.n < self.SMALL:
                return
        else:
            self.parts.append(mv)
            self.n += len(mv)
        self.flush()

    def flush(self) -> None:
        parts = self.parts
        while parts:
            k = os.writev(self.fd, parts)
            while parts and k >= len(parts[0]):
                k -= len(parts[0])
                parts.pop(0)
            if k:
                parts[0] = memoryview(parts[0])[k:]
        self.unflushed += self.n
        self.n = 0
        if self.unflushed >= WRITE_BATCH:
            start_writeback(self.fd)  # the disk works while the next chunks decode: the final fsync has less left
            self.unflushed = 0


def _remove_stale_temps(final: Path) -> None:
    """Temp files a killed writer left beside ``final`` (their pid is gone)."""
    prefix = f".{final.name}.coral-"
    try:
        names = [n for n in os.listdir(final.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return
    for n in names:
        pid = n[len(prefix) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            (final.parent / n).unlink(missing_ok=True)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refresh_index(repo: Repo, items: list[tuple[str, ptr.Pointer]]) -> None:
    """Record the new files' stat data in the index, so ``git status`` is clean without re-hashing.

    ``git update-index --refresh`` cannot do it: the index holds the pointer's size, and git takes
    a size change for a modification without looking. Re-adding the paths runs clean once (one
    hash pass; every chunk is already stored, so the blob is the same pointer). A failure (the
    index is locked by a running git) is harmless: ``git status`` then re-hashes the file.
    Clean of these paths only hashes the bytes (filter/fresh.py).
    """
    from .fresh import ENV

    fresh = repo.store_root / "tmp" / f"direct-fresh-{os.getpid()}"
    fresh.parent.mkdir(parents=True, exist_ok=True)
    fresh.write_bytes(b"".join(path.encode("utf-8", "surrogateescape") + b"\0" + p.encode() + b"\0" for path, p in items))
    env = {**os.environ, "CORAL_DIRECT_ACTIVE": "1", ENV: str(fresh)}
    try:
        run_git(["update-index", "-q", "--", *(path for path, _ in items)], repo.worktree, env=env)
    finally:
        fresh.unlink(missing_ok=True)


# -- hooks ------------------------------------------------------------------------------------------
def hook_step(args: list[str], stdin: str) -> int:
    """post-checkout / post-merge / post-rewrite: finish what a dead filter process left pending.

    A live filter process finishes its own list when git closes it; a hook never fails the command.
    """
    from ..git.repo import find_repo

    if os.environ.get("CORAL_SKIP_SMUDGE", "0") not in ("", "0"):
        return 0
    try:
        repo = find_repo()
        finish_orphans(repo)
    except CoralError as exc:
        log(f"direct checkout: {exc}; {FINISH}")
    return 0


DIRECT_HOOKS = ("post-checkout", "post-merge", "post-rewrite")  # each runs hook_step (commands/setup.py)
