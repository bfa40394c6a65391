"""Remote chunk stores: where a git remote's chunks live, and a small interface to move objects.

A remote store holds stored objects (header + payload, see ``store/objects.py``) in packs: a
directory remote in the local store's own layout (``packs/pack-….pack``, so it is itself a valid
chunk store), an S3 store as wire packs with their indexes (``s3.py``), a Git LFS server as LFS
objects (``lfsremote.py``). Loose objects (``objects/ab/cdef…``, what earlier versions pushed) are
still read from directory and S3 stores.

Resolution, for git remote ``NAME``:

1. ``git config coral.remote.NAME.url`` (set with ``git coral remote set NAME URL``): a path,
   ``file://`` URL or ``s3://bucket/prefix``;
2. else the same key in a committed ``.coralconfig`` file (git config syntax; read from the work
   tree, else from ``HEAD:.coralconfig``), so that a fresh clone finds the store by itself;
3. else, when the remote's own URL is a local path or ``file://`` URL: the ``coral/`` store inside
   that repository (``<repo>/coral`` for a bare repository, ``<repo>/.git/coral`` otherwise).

Every object on a remote is self-contained: a delta's base is uploaded before the delta (or the
delta is re-encoded as a keyframe), so "the remote has X" implies it can rebuild X.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import RemoteError, StoreError, UsageError
from ..git.repo import git_value, run_git, shared_value
from . import packing
from .base import PARALLEL, RemoteStore, object_key, os_error
from .packing import PackQueue
from .s3 import S3Remote
from .wirepack import WireItem


class PathRemote(RemoteStore):
    """A store in a directory (a bare repository's ``coral/``, a shared disk, a mounted volume).

    Pushed objects land in pack files under ``packs/``, written like the local store writes its own
    (temp file, fsync, rename; ``store/packs.py``), so the directory stays a valid chunk store: a bare
    repository's ``git coral gc/fsck/stats`` see them, and a pack's objects record the push time, so
    a gc there keeps them for its grace period even before the refs that need them arrive. Loose
    objects (``objects/ab/…``, what earlier versions pushed) stay readable.
    """

    def __init__(self, name: str, root: Path, pack_bytes: int | None = None, tmp_dir: Path | None = None) -> None:
        super().__init__(name, str(root))
        self.root = Path(root)
        self._packs = None
        self.queue = PackQueue(self._write_pack, pack_bytes or packing.pack_bytes(), tmp_dir)  # spool beside the local store
        self.packs_written = 0

    def _path(self, cid: str) -> Path:
        return self.root / object_key(cid)

    def _check(self) -> None:
        parent = self.root.parent
        if not self.root.is_dir() and not parent.is_dir():
            raise RemoteError(f"cannot reach {self.describe()}: {parent} does not exist; check the remote's URL")

    def _source(self):
        if self._packs is None:
            from ..store.packs import PackSource

            self._packs = PackSource(self.root / "packs")
        return self._packs

    def _packed(self, cid: str) -> bytes | None:
        """``cid`` from the remote's packs (pushed, or written by a gc in the bare repository)."""
        if not (self.root / "packs").is_dir():
            return None
        return self._source().read(cid)

    def has_many(self, ids: Iterable[str]) -> set[str]:
        self._check()
        if not (self.root / "packs").is_dir():
            return {c for c in ids if self._path(c).exists()}
        src = self._source()
        return {c for c in ids if src.has(c) or self._path(c).exists()}

    def upload(self, cid: str, data: bytes) -> None:
        self.upload_many({cid: data})
        self.flush()

    def upload_many(self, objs: dict[str, bytes]) -> None:
        """Queue objects for the next pack; a full pack is written at once, ``flush`` writes the rest."""
        self._check()
        for cid, data in objs.items():
            self.queue.add(cid, data)

    def flush(self) -> None:
        self.queue.flush()

    def _write_pack(self, items: list[WireItem]) -> None:
        from ..store.packs import PackItem, write_pack

        now = int(time.time())
        try:
            path = write_pack(self.root / "packs", [PackItem(it.cid, now, it.read) for it in items])
        except (OSError, StoreError) as exc:
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            if not isinstance(cause, OSError):
                raise
            raise os_error(cause, self) from None
        assert path is not None
        self.bytes_up += path.stat().st_size
        self.requests += 1
        self.packs_written += 1

    def download(self, ids: list[str]) -> dict[str, bytes]:
        self._check()

        def read(cid: str) -> bytes:
            try:
                data = self._packed(cid)
                if data is not None:
                    return data
                return self._path(cid).read_bytes()
            except FileNotFoundError:
                raise self.missing(cid) from None
            except OSError as exc:
                raise os_error(exc, self) from None

        with ThreadPoolExecutor(max_workers=min(PARALLEL, max(1, len(ids)))) as pool:
            out = dict(zip(ids, pool.map(read, ids), strict=True))
        self.bytes_down += sum(len(v) for v in out.values())
        self.requests += len(ids)
        return out


# -- resolution ---------------------------------------------------------------------------------
def _git_config(key: str, cwd: Path | None) -> str | None:
    return git_value(["config", "--get", key], cwd)


def shared_config(key: str, cwd: Path | None, worktree: Path | None) -> str | None:
    """``key`` from the committed ``.coralconfig`` (work tree first, else HEAD's blob)."""
    return shared_value(key, cwd, worktree)


def local_path(url: str, base: Path | None) -> Path | None:
    """The local path a git URL names, or None for a network URL (ssh, https, scp-like)."""
    if url.startswith("file://"):
        return Path(unquote(urlparse(url).path))
    if "://" in url:
        return None
    if ":" in url.split("/", 1)[0] and not url.startswith("/"):
        return None  # scp-like host:path
    p = Path(url).expanduser()
    return p if p.is_absolute() or base is None else (base / p)


def repo_store_dir(path: Path) -> Path:
    """The coral store of the repository at ``path``: ``coral`` in a bare one, ``.git/coral`` otherwise."""
    if not path.exists() and Path(str(path) + ".git").exists():
        path = Path(str(path) + ".git")
    dotgit = path / ".git"
    if dotgit.is_dir():
        return dotgit / "coral"
    if dotgit.is_file():
        proc = run_git(["rev-parse", "--path-format=absolute", "--git-common-dir"], path)
        if proc.returncode == 0:
            return Path(proc.stdout.decode().strip()) / "coral"
    return path / "coral"


def store_for_url(name: str, url: str, base: Path | None, local_root: Path | None = None, pack_bytes: int | None = None) -> RemoteStore:
    """A RemoteStore for a store URL (a directory, ``file://`` or ``s3://``); ``local_root`` is the
    local store (where an S3 store caches its pack indexes and spools its uploads)."""
    if url.startswith(("s3://", "s3a://")):
        return S3Remote(name, url, local_root, pack_bytes)
    p = local_path(url, base)
    if p is None:
        raise UsageError(f"unsupported chunk store URL '{url}'; use a path or s3://bucket/prefix")
    return PathRemote(name, p.resolve(), pack_bytes, local_root / "tmp" if local_root is not None else None)


def remote_pack_bytes(repo) -> int:
    """``coral.remotePackSize`` (or CORAL_REMOTEPACKSIZE): the size packs are cut at for path and S3 stores."""
    return repo.setting_int("coral.remotePackSize", packing.pack_bytes(), 1 << 10, 4 << 30)


def resolve(repo, name: str, url: str | None = None) -> RemoteStore:
    """The chunk store of git remote ``name`` (whose git URL may be passed, as pre-push does)."""
    cwd = repo.worktree or repo.git_dir
    configured = _git_config(f"coral.remote.{name}.url", cwd) or shared_config(
        f"coral.remote.{name}.url", cwd, repo.worktree
    )
    if configured:
        return store_for_url(name, configured, cwd, repo.store.root, remote_pack_bytes(repo))
    git_url = _git_config(f"remote.{name}.url", cwd) or url
    if git_url is None and (name.startswith(("/", ".", "file://")) or os.sep in name):
        git_url = name
    if git_url is None:
        raise UsageError(f"no git remote named '{name}'; add one with 'git remote add {name} URL'")
    p = local_path(git_url, cwd)
    lfs = lfs_store(repo, name, explicit_only=p is not None)
    if lfs is not None:
        return lfs
    if p is None:
        raise RemoteError(
            f"git remote '{name}' ({git_url}) has no chunk store; "
            f"set one with 'git coral remote set {name} s3://BUCKET/PREFIX' (or a path)"
        )
    return PathRemote(name, repo_store_dir(p.resolve()), remote_pack_bytes(repo), repo.store.root / "tmp")


def lfs_store(repo, name: str, explicit_only: bool) -> RemoteStore | None:
    """The remote's Git LFS server as chunk store: when ``lfs.url``/``remote.NAME.lfsurl`` (or
    ``.lfsconfig``) names one, or — unless ``explicit_only`` — when the git URL is https/ssh."""
    from .lfs import LfsEndpointError
    from .lfs import resolve as resolve_endpoint
    from .lfs.gitconfig import GitConfig
    from .lfsremote import LfsRemote

    cwd = repo.worktree or repo.git_dir
    try:
        ep = resolve_endpoint(name, "download", GitConfig(cwd))
    except LfsEndpointError:
        return None
    if explicit_only and ep.source == "derived":
        return None
    if not ep.url.startswith(("http://", "https://")):
        return None
    return LfsRemote(name, cwd, repo.store.root)


def default_remote(repo, key: str = "coral.fetchRemote") -> str | None:
    """The remote to use by default: ``key`` in git config, the branch's upstream remote, or origin."""
    cwd = repo.worktree or repo.git_dir
    name = _git_config(key, cwd)
    if name:
        return name
    proc = run_git(["symbolic-ref", "-q", "--short", "HEAD"], cwd)
    branch = proc.stdout.decode().strip()
    if branch:
        up = _git_config(f"branch.{branch}.remote", cwd)
        if up and up != ".":
            return up
    proc = run_git(["remote"], cwd)
    remotes = proc.stdout.decode().split()
    if "origin" in remotes:
        return "origin"
    return remotes[0] if len(remotes) == 1 else None
