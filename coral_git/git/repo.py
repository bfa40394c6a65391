"""Where the repository, its store and its coral settings are."""

from __future__ import annotations

import os
import subprocess
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, TypeVar

from ..core.chunking import DEFAULT_CHUNK_BYTES
from ..errors import NotARepositoryError, UsageError

if TYPE_CHECKING:  # the store pulls in numpy: a filter answering from its clean cache never loads it
    from ..store.chunkstore import ChunkStore

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)  # coral.workers when unset


def run_git(
    args: Sequence[str],
    cwd: Path | str | None = None,
    input: bytes | None = None,
    stdout: IO[bytes] | int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """The one place coral starts the git binary: ``git ARGS`` in ``cwd``, output captured (or streamed
    into ``stdout``, e.g. a big blob into a file), exit status kept.

    Everything else (``git()``, ``git_value()``, :class:`ObjectReader`, pygit2 for commands that are not
    the filter) goes through here or reads objects directly.
    """
    out = subprocess.PIPE if stdout is None else stdout
    return subprocess.run(["git", *args], cwd=cwd, input=input, stdout=out, stderr=subprocess.PIPE, env=env)


def git_value(args: Sequence[str], cwd: Path | str | None = None) -> str | None:
    """git's stdout, stripped, when it succeeds and prints something; else None (an unset config key, no remote)."""
    proc = run_git(args, cwd)
    out = proc.stdout.decode(errors="surrogateescape").strip()
    return out if proc.returncode == 0 and out else None


def git(*args: str, cwd: Path | str | None = None, check: bool = True, input: bytes | None = None) -> str:
    """Run git and return its stdout as text (stripped of the final newline)."""
    proc = run_git(args, cwd, input)
    if check and proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise UsageError(f"git {' '.join(args[:2])} failed: {msg[-1] if msg else proc.returncode}")
    return proc.stdout.decode(errors="surrogateescape").rstrip("\n")


T = TypeVar("T")


class ObjectReader:
    """Object reads through ``git cat-file --batch-check`` (headers) and ``--batch`` (contents), each
    one process started on first use.

    The filter's lookups (a path's previous pointer, the pointers other paths hold) go through git
    itself: importing pygit2 and loading the index cost a filter start-up ~70 ms, a pipe round trip
    to these processes a few µs. ``names`` are anything git's object-name syntax takes (``:PATH`` for
    the index, ``HEAD:PATH``, an object id). Plain ``--batch``/``--batch-check`` (every git version),
    not ``--batch-command`` (git >= 2.36): headers first, so contents are only asked for what is small.
    """

    CHUNK = 16 << 10  # request bytes written at once: always fits a pipe, so git's answers cannot deadlock us

    def __init__(self, cwd: Path | str | None) -> None:
        self.cwd = cwd
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stops: dict[str, weakref.finalize] = {}
        self._lock = threading.Lock()  # one request/answer exchange at a time (clean's worker threads)

    def _start(self, mode: str) -> subprocess.Popen[bytes]:
        proc = self._procs.get(mode)
        if proc is None:
            proc = self._procs[mode] = subprocess.Popen(
                ["git", "cat-file", mode],
                cwd=self.cwd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            self._stops[mode] = weakref.finalize(self, _stop, proc)
        return proc

    def _run(self, mode: str, names: list[str], read: Callable[[IO[bytes]], T]) -> list[T]:
        bad = [n for n in names if "\n" in n]
        if bad:
            raise ValueError(f"object name with a newline: {bad[0]!r}")
        with self._lock:
            proc = self._start(mode)
            assert proc.stdin is not None and proc.stdout is not None
            out: list[T] = []
            i = 0
            while i < len(names):
                part: list[bytes] = []
                size = 0
                while i < len(names) and (not part or size < self.CHUNK):
                    line = names[i].encode("utf-8", "surrogateescape") + b"\n"
                    part.append(line)
                    size += len(line)
                    i += 1
                try:
                    proc.stdin.write(b"".join(part))
                    proc.stdin.flush()
                except BrokenPipeError:
                    raise UsageError("git cat-file stopped answering") from None
                out.extend(read(proc.stdout) for _ in part)
            return out

    def info(self, names: list[str]) -> list[tuple[str, str, int] | None]:
        """``(oid, type, size)`` per name, None for a name that does not resolve."""
        return self._run("--batch-check", names, _read_header)

    def contents(self, oids: list[str]) -> list[bytes | None]:
        """The bytes of each object (ids from :meth:`info`; callers check sizes first)."""
        return self._run("--batch", oids, _read_object)

    def read(self, name: str, limit: int) -> tuple[str, bytes | None] | None:
        """``(oid, bytes)`` of object ``name``; bytes None when the object is larger than ``limit``."""
        head = self.info([name])[0]
        if head is None:
            return None
        oid, _, size = head
        return oid, (self.contents([oid])[0] if size <= limit else None)

    def close(self) -> None:
        """End the git processes (also done at exit and when the reader is collected)."""
        with self._lock:
            self._procs.clear()
            for stop in self._stops.values():
                stop()
            self._stops.clear()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        proc.stdin.close()  # type: ignore[union-attr]  # git exits at the end of its input
    except OSError:
        pass
    proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]


def _read_header(f: IO[bytes]) -> tuple[str, str, int] | None:
    line = f.readline()
    if not line:
        raise UsageError("git cat-file stopped answering")
    parts = line.split()
    if len(parts) != 3 or parts[-1] in (b"missing", b"ambiguous"):
        return None
    return parts[0].decode(), parts[1].decode(), int(parts[2])


def _read_object(f: IO[bytes]) -> bytes | None:
    head = _read_header(f)
    if head is None:
        return None
    data = f.read(head[2])
    f.read(1)  # the newline after the contents
    return data


def tree_entries(data: bytes, oid_hex_len: int) -> Iterator[tuple[str, str, str]]:
    """``(mode, name, oid hex)`` of a raw tree object; ``oid_hex_len`` 40 (SHA-1) or 64 (SHA-256)."""
    width = oid_hex_len // 2
    i, n = 0, len(data)
    while i < n:
        sp = data.index(b" ", i)
        nul = data.index(b"\0", sp)
        yield data[i:sp].decode(), data[sp + 1 : nul].decode("utf-8", "surrogateescape"), data[nul + 1 : nul + 1 + width].hex()
        i = nul + 1 + width


@dataclass
class Repo:
    """A git repository as coral sees it."""

    git_dir: Path
    common_dir: Path
    worktree: Path | None
    config: dict[str, str] = field(default_factory=dict)

    @property
    def store_root(self) -> Path:
        return self.common_dir / "coral"

    def setting_bool(self, key: str, default: bool) -> bool:
        """A boolean coral setting (git config or CORAL_* env) in git's spellings."""
        raw = os.environ.get("CORAL_" + key.split(".", 1)[1].upper()) or self.config.get(key.lower())
        if raw is None:
            return default
        value = raw.strip().lower()
        if value in ("true", "yes", "on", "1", ""):
            return True
        if value in ("false", "no", "off", "0"):
            return False
        raise UsageError(f"{key} = {raw!r} is not a boolean; fix it with 'git config {key} true|false'")

    def setting_int(self, key: str, default: int, lo: int = 0, hi: int = 1 << 40) -> int:
        """An integer coral setting (git config or CORAL_* env), checked against its range."""
        raw = os.environ.get("CORAL_" + key.split(".", 1)[1].upper()) or self.config.get(key.lower())
        if raw is None:
            return default
        try:
            value = _parse_size(raw)
        except ValueError:
            raise UsageError(f"{key} = {raw!r} is not a number; fix it with 'git config {key} <n>'") from None
        if not lo <= value <= hi:
            raise UsageError(f"{key} = {value} is out of range [{lo}, {hi}]")
        return value

    @cached_property
    def chunk_bytes(self) -> int:
        """``coral.chunkSize``: pointers depend on it, so a committed ``.coralconfig`` wins (pointer_setting)."""
        return pointer_setting(self, "coral.chunkSize", *POINTER_SETTINGS["coral.chunkSize"])

    @property
    def workers(self) -> int:
        return self.setting_int("coral.workers", DEFAULT_WORKERS, 1, 256)

    @cached_property
    def store(self) -> ChunkStore:
        from ..store.chunkstore import ADD_PACK_OVER, DEFAULT_ADD_CHAIN, DEFAULT_MAX_CHAIN, ChunkStore
        from ..store.packs import attach

        store = ChunkStore(
            self.store_root,
            max_chain=self.setting_int("coral.maxChain", DEFAULT_MAX_CHAIN, 0, 255),
            add_chain=self.setting_int("coral.addChain", DEFAULT_ADD_CHAIN, 0, 255),
            level=self.setting_int("coral.zstdLevel", 1, 1, 22),
        )
        store.fsync = self.setting_bool("coral.fsync", True)
        store.pack_adds = self.setting_int("coral.addPackSize", ADD_PACK_OVER)
        store.delta_codec = delta_codec_code(self.config.get("coral.deltacodec"))
        attach(store)  # packed objects (git coral gc / repack) after loose ones
        return store

    @cached_property
    def objects(self) -> ObjectReader:
        """Object reads through git (:class:`ObjectReader`); pygit2 is for commands, never the filter."""
        return ObjectReader(self.worktree or self.git_dir)

    @cached_property
    def pygit(self):
        import pygit2

        return pygit2.Repository(str(self.git_dir))


def _parse_size(raw: str) -> int:
    raw = raw.strip().lower()
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(raw[-1:], 1)
    return int(raw[:-1] if mult != 1 else raw) * mult


# -- settings that travel with the repository: the committed .coralconfig (git-config syntax) --------
# A clone's git config is its own, but pointers must not depend on the clone: a setting that changes
# pointers (every key of POINTER_SETTINGS) is read from .coralconfig when it is set there, and local
# git config (or the CORAL_* variable) may only agree with it. Remote settings
# (coral.remote.<name>.url) are read from the same file, after local git config.
SHARED_FILE = ".coralconfig"
# settings on which pointers depend: key → (default, lo, hi); add future ones here
POINTER_SETTINGS: dict[str, tuple[int, int, int]] = {"coral.chunkSize": (DEFAULT_CHUNK_BYTES, 4096, 1 << 30)}


def shared_value(key: str, cwd: Path | None, worktree: Path | None) -> str | None:
    """``key`` from the committed ``.coralconfig`` (work tree first, else HEAD's blob)."""
    if worktree is not None and (worktree / SHARED_FILE).is_file():
        args = ["config", "--file", str(worktree / SHARED_FILE), "--get", key]
    else:
        args = ["config", "--blob", f"HEAD:{SHARED_FILE}", "--get", key]
    return git_value(args, cwd)


def _env_name(key: str) -> str:
    return "CORAL_" + key.split(".", 1)[1].upper()


def pointer_setting(repo: Repo, key: str, default: int, lo: int, hi: int) -> int:
    """The value of pointer setting ``key``: ``.coralconfig`` wins; a local value must agree.

    Without ``.coralconfig`` (or without the key in it) the local value (git config, ``CORAL_*``)
    or the default is used, as before: a repository opts in by committing the file.
    """
    raw = shared_value(key, repo.worktree or repo.git_dir, repo.worktree)
    if raw is None:
        return repo.setting_int(key, default, lo, hi)
    try:
        value = _parse_size(raw)
    except ValueError:
        raise UsageError(f"{key} = {raw!r} in {SHARED_FILE} is not a number; fix it there and commit it") from None
    if not lo <= value <= hi:
        raise UsageError(f"{key} = {value} in {SHARED_FILE} is out of range [{lo}, {hi}]; fix it there and commit it")
    env = _env_name(key)
    local_raw = os.environ.get(env) or repo.config.get(key.lower())
    if local_raw is not None and repo.setting_int(key, default, lo, hi) != value:
        where = env if os.environ.get(env) else "git config"
        raise UsageError(
            f"{key} = {local_raw} in {where} disagrees with {key} = {raw} in {SHARED_FILE}, which is committed "
            f"with the repository and wins (pointers depend on it); remove the local value "
            f"('git config --unset {key}', with --global if it is set there) or change {SHARED_FILE} and commit it"
        )
    return value


def find_repo(cwd: Path | str | None = None, bare_ok: bool = False) -> Repo:
    """Locate the repository that contains ``cwd`` (honours GIT_DIR like git does).

    ``bare_ok``: a bare repository (or a git directory itself, where ``worktree`` is None) is
    accepted — for maintenance (gc, fsck, stats) of the store a path remote writes to.
    """
    proc = run_git(["rev-parse", "--path-format=absolute", "--git-dir", "--git-common-dir", "--show-toplevel"], cwd)
    lines = proc.stdout.decode(errors="surrogateescape").splitlines()
    if len(lines) < 2:
        raise NotARepositoryError("not inside a git repository; run this from a repository's work tree")
    if proc.returncode != 0 and not bare_ok:
        # a bare repository has no top level; rev-parse still prints the first two
        raise NotARepositoryError(
            "this command needs a work tree, and this is a bare repository (or a git directory); "
            "only 'git coral gc', 'fsck' and 'stats' run here"
        )
    worktree = Path(lines[2]) if proc.returncode == 0 and len(lines) > 2 and lines[2] else None
    # coral's settings, plus core.hooksPath (where the hooks a filter run installs would go: install.py)
    cfg = run_git(["config", "-z", "--get-regexp", r"^(coral\.|core\.hookspath$)"], cwd)
    config: dict[str, str] = {}
    for item in cfg.stdout.decode(errors="replace").split("\0"):
        if item:
            k, _, v = item.partition("\n")
            config[k.lower()] = v
    return Repo(Path(lines[0]), Path(lines[1]), worktree, config)


def delta_codec_code(name: str | None) -> int:
    """The registry code of ``coral.deltaCodec`` (a delta codec's name), or the default."""
    from ..store.chunkstore import DELTA_CODEC
    from ..store.codecs import Codec

    if not name:
        return DELTA_CODEC
    for code, c in Codec.registry.items():
        if c.name == name and c.delta:
            return code
    names = ", ".join(c.name for c in Codec.registry.values() if c.delta)
    raise UsageError(f"coral.deltaCodec = {name!r} is not a delta codec; use one of: {names}")
