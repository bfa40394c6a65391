"""Automatic maintenance, like ``git gc --auto``: after an add stored new objects, a cheap estimate
of the loose objects (and of the packs large adds stream into, read from their headers) decides whether ``git coral gc --auto`` starts as a detached background process.

The add never waits: the estimate reads a few object directories (git's trick: count one directory,
multiply by 256), and starting the child is one fork+exec with its stdio on ``coral/gc.log``. One gc
at a time: the child holds an ``flock`` on ``coral/gc.pid`` (which names its pid), so a killed gc
leaves no stale lock (the kernel drops it with the process), and a new one is not started while the
lock is held. Auto gc is the normal gc with the normal grace period: it packs, re-encodes what lost
its base and drops only unreachable objects older than ``coral.pruneExpire``.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..store.packformat import add_packs
from ..ui import human_bytes
from .repo import Repo, _parse_size

DEFAULT_AUTO = 6700  # loose objects, git's gc.auto
DEFAULT_AUTO_BYTES = 1 << 30  # loose bytes
PID_FILE = "gc.pid"
LOG_FILE = "gc.log"
CHILD_ENV = "CORAL_AUTO_GC_CHILD"
MAX_ROUNDS = 3  # a gc --auto goes again when adds passed the threshold while it ran
SAMPLE = 100  # loose objects counted before extrapolating
FIRST_DIR = 0x17  # where counting starts, like git (any fixed directory does: ids are uniform)
# variables that tell git where a repository is; the child finds it from its working directory
_LOCATION_ENV = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_QUARANTINE_PATH", "GIT_PREFIX", "GIT_IMPLICIT_WORK_TREE",
    "GIT_SHALLOW_FILE", "GIT_GRAFT_FILE", "GIT_NAMESPACE",
)  # fmt: skip


@dataclass(frozen=True)
class Loose:
    """Loose objects in a store: counted exactly when few, else extrapolated from a sample."""

    objects: int
    bytes: int
    exact: bool


def estimate_loose(objects_dir: Path, enough: int = SAMPLE) -> Loose:
    """Count loose objects directory by directory until ``enough`` are seen, then extrapolate."""
    try:
        present = {e.name for e in os.scandir(objects_dir) if len(e.name) == 2}
    except (FileNotFoundError, NotADirectoryError):
        return Loose(0, 0, True)
    n = size = scanned = 0
    for i in range(256):
        name = f"{(FIRST_DIR + i) % 256:02x}"
        scanned += 1
        if name in present:
            try:
                entries = list(os.scandir(objects_dir / name))
            except FileNotFoundError:
                entries = []
            for f in entries:
                if len(f.name) == 30 and not f.name.startswith("."):
                    try:
                        size += f.stat().st_size
                    except FileNotFoundError:
                        continue
                    n += 1
        if n >= enough:
            break
    scale = 256 / scanned
    return Loose(round(n * scale), round(size * scale), scanned == 256)


def _setting(repo: Repo, key: str, env: str, default: int) -> int:
    raw = os.environ.get(env)
    if raw is not None and raw.strip():
        from ..errors import UsageError

        try:
            return max(0, _parse_size(raw))
        except ValueError:
            raise UsageError(f"{env} = {raw!r} is not a number; use e.g. {env}=0 to turn automatic gc off") from None
    return repo.setting_int(key, default)


def thresholds(repo: Repo) -> tuple[int, int]:
    """``(coral.gc.auto, coral.gc.autoBytes)``; ``coral.gc.auto = 0`` turns automatic gc off."""
    auto = _setting(repo, "coral.gc.auto", "CORAL_GC_AUTO", DEFAULT_AUTO)
    auto_bytes = _setting(repo, "coral.gc.autoBytes", "CORAL_GC_AUTO_BYTES", DEFAULT_AUTO_BYTES)
    return auto, auto_bytes


def check(repo: Repo) -> tuple[bool, str]:
    """Whether the store needs a gc now, and why (or why not), in words."""
    auto, auto_bytes = thresholds(repo)
    if auto <= 0:
        return False, "automatic gc is off (coral.gc.auto = 0)"
    loose = estimate_loose(repo.store_root / "objects")
    about = "" if loose.exact else "about "
    what = f"{about}{loose.objects} loose object(s), {about}{human_bytes(loose.bytes)}"
    added = add_packs(repo.store_root / "packs")  # large adds stream into packs: new objects all the same
    if added:
        n, size = sum(a[1] for a in added), sum(a[2] for a in added)
        loose = Loose(loose.objects + n, loose.bytes + size, loose.exact)
        what += f" + {n} in {len(added)} add pack(s), {human_bytes(size)}"
    if loose.objects > auto:
        return True, f"{what}: more than coral.gc.auto = {auto} objects"
    if auto_bytes > 0 and loose.bytes > auto_bytes:
        return True, f"{what}: more than coral.gc.autoBytes = {human_bytes(auto_bytes)}"
    limit = f"coral.gc.auto = {auto} objects" + (f", coral.gc.autoBytes = {human_bytes(auto_bytes)}" if auto_bytes > 0 else "")
    return False, f"{what}: below {limit}"


def running(root: Path) -> int | None:
    """The pid of the gc holding ``coral/gc.pid``, or None when no gc runs (a stale file is ignored)."""
    try:
        fd = os.open(root / PID_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 200).decode(errors="replace").split()
            return int(text[0]) if text and text[0].isdigit() else -1
        return None  # nobody holds it: whoever wrote it has exited (or was killed)
    finally:
        os.close(fd)


@contextmanager
def gc_lock(root: Path) -> Iterator[int | None]:
    """Hold ``coral/gc.pid`` for one gc: yields None when this process has it, else the pid of the
    gc that holds it. The lock is an ``flock``, so it dies with its process: never stale."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / PID_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            text = os.read(fd, 200).decode(errors="replace").split()
            yield int(text[0]) if text and text[0].isdigit() else -1
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        try:
            yield None
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def spawn(repo: Repo) -> subprocess.Popen:
    """Start ``git coral gc --auto`` for ``repo`` detached (own session, stdio on ``coral/gc.log``)."""
    root = repo.store_root
    env = {k: v for k, v in os.environ.items() if k not in _LOCATION_ENV}
    env[CHILD_ENV] = "1"
    code = "import sys; from coral_git.cli import main; sys.exit(main(['gc', '--auto']))"
    with open(root / LOG_FILE, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=repo.common_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            close_fds=True,
            start_new_session=True,
        )


def maybe_spawn(repo: Repo) -> subprocess.Popen | None:
    """After an add that stored objects: start a background gc when the store needs one and none
    runs. Never raises and never waits: maintenance must not fail or slow the add."""
    if os.environ.get(CHILD_ENV):
        return None
    try:
        needed, _ = check(repo)
        if not needed or running(repo.store_root) is not None:
            return None
        return spawn(repo)
    except Exception:  # a bad setting, a read-only store: the add still succeeds
        return None
