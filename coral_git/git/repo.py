"""Where the repository, its store and its coral settings are."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO

from ..core.chunking import DEFAULT_CHUNK_BYTES
from ..errors import NotARepositoryError, UsageError
from ..store.chunkstore import ADD_PACK_OVER, DEFAULT_ADD_CHAIN, DEFAULT_MAX_CHAIN, ChunkStore

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

    Everything else (``git()``, ``git_value()``, pygit2 for object reads) goes through here or reads objects directly.
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
