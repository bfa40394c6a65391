"""Remote chunk stores: where a git remote's chunks live, and a small interface to move objects.

A remote store holds stored objects (header + payload, see ``store/objects.py``) under the same
``objects/ab/cdef…`` layout as a local store, so a directory remote is itself a valid chunk store.

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

import errno
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import RemoteError, StoreError, UsageError
from ..git.repo import git_value, run_git, shared_value
from ..store.objects import write_atomic
from .base import RemoteStore

PARALLEL = 16


def object_key(cid: str) -> str:
    return f"objects/{cid[:2]}/{cid[2:]}"


class PathRemote(RemoteStore):
    """A store in a directory (a bare repository's ``coral/``, a shared disk, a mounted volume)."""

    def __init__(self, name: str, root: Path) -> None:
        super().__init__(name, str(root))
        self.root = Path(root)

    def _path(self, cid: str) -> Path:
        return self.root / object_key(cid)

    def _check(self) -> None:
        parent = self.root.parent
        if not self.root.is_dir() and not parent.is_dir():
            raise RemoteError(f"cannot reach {self.describe()}: {parent} does not exist; check the remote's URL")

    def _packed(self, cid: str) -> bytes | None:
        """``cid`` from the remote's packs (a gc run in the bare repository packs its store)."""
        if getattr(self, "_packs", None) is None:
            from ..store.packs import PackSource

            self._packs = PackSource(self.root / "packs")
        if not (self.root / "packs").is_dir():
            return None
        return self._packs.read(cid)

    def has_many(self, ids: Iterable[str]) -> set[str]:
        self._check()
        return {c for c in ids if self._path(c).exists() or self._packed(c) is not None}

    def upload(self, cid: str, data: bytes) -> None:
        self._check()
        try:
            write_atomic(self._path(cid), data)
        except (OSError, StoreError) as exc:
            cause = exc if isinstance(exc, OSError) else exc.__cause__
            if not isinstance(cause, OSError):
                raise
            raise _os_error(cause, self) from None
        self.bytes_up += len(data)
        self.requests += 1

    def download(self, ids: list[str]) -> dict[str, bytes]:
        self._check()

        def read(cid: str) -> bytes:
            try:
                return self._path(cid).read_bytes()
            except FileNotFoundError:
                data = self._packed(cid)
                if data is None:
                    raise self.missing(cid) from None
                return data
            except OSError as exc:
                raise _os_error(exc, self) from None

        with ThreadPoolExecutor(max_workers=min(PARALLEL, max(1, len(ids)))) as pool:
            out = dict(zip(ids, pool.map(read, ids), strict=True))
        self.bytes_down += sum(len(v) for v in out.values())
        self.requests += len(ids)
        return out


def _os_error(exc: OSError, remote: RemoteStore) -> RemoteError:
    if exc.errno == errno.ENOSPC:
        return RemoteError(f"{remote.describe()} is full (no space left on device); free space there and retry")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RemoteError(f"{remote.describe()} is not writable ({exc.strerror}); check its permissions")
    return RemoteError(f"cannot use {remote.describe()}: {exc.strerror or exc}")


class S3Remote(RemoteStore):
    """A store under ``s3://bucket/prefix`` through fsspec/s3fs (any S3-compatible server).

    Endpoint, region and credentials come from the usual AWS settings (``AWS_ENDPOINT_URL``,
    ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE``, ``~/.aws/config``). A single PUT is atomic in S3: an object becomes visible
    only once its whole body has arrived, so no temporary key is needed.
    """

    LIST_ABOVE = 64  # has_many lists the prefix instead of one HEAD per id beyond this many ids

    def __init__(self, name: str, url: str) -> None:
        super().__init__(name, url)
        u = urlparse(url)
        if not u.netloc:
            raise UsageError(f"'{url}' has no bucket; use s3://BUCKET/PREFIX")
        self.bucket = u.netloc
        self.prefix = u.path.strip("/")
        self._fs = None

    @property
    def fs(self):
        if self._fs is None:
            try:
                import s3fs
            except ImportError:
                raise UsageError(
                    f"{self.describe()} needs s3fs; install it with 'pip install coral-git[s3]'"
                ) from None
            client: dict[str, str] = {}
            if os.environ.get("AWS_ENDPOINT_URL"):
                client["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            if region:
                client["region_name"] = region
            fs = s3fs.S3FileSystem(
                client_kwargs=client,
                config_kwargs={"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}},
                skip_instance_cache=True,
                use_listings_cache=False,
                max_concurrency=1,
            )
            fs.retries = 3
            self._fs = fs
        return self._fs

    def _key(self, cid: str) -> str:
        return f"{self.prefix}/{object_key(cid)}" if self.prefix else object_key(cid)

    def _run(self, fn, *args):
        from fsspec.asyn import sync

        try:
            return sync(self.fs.loop, fn, *args)
        except RemoteError:
            raise
        except UsageError:
            raise
        except Exception as exc:
            raise _s3_error(exc, self) from None

    async def _gather(self, fn, items: list):
        import asyncio

        sem = asyncio.Semaphore(PARALLEL)

        async def one(item):
            async with sem:
                return await fn(item)

        return await asyncio.gather(*(one(i) for i in items))

    def has_many(self, ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return set()
        fs = self.fs
        if len(ids) > self.LIST_ABOVE:
            want = set(ids)
            return want & self._list_all()

        async def head(cid: str) -> bool:
            self.requests += 1
            try:
                await fs._call_s3("head_object", Bucket=self.bucket, Key=self._key(cid))
                return True
            except FileNotFoundError as exc:
                if "bucket" in str(exc).lower() and "nosuchbucket" in str(exc).lower():
                    raise
                return False

        found = self._run(self._gather, head, ids)
        return {c for c, ok in zip(ids, found, strict=True) if ok}

    def _list_all(self) -> set[str]:
        fs = self.fs
        base = f"{self.prefix}/objects/" if self.prefix else "objects/"

        async def listing() -> set[str]:
            out: set[str] = set()
            token = None
            while True:
                kw = {"Bucket": self.bucket, "Prefix": base}
                if token:
                    kw["ContinuationToken"] = token
                self.requests += 1
                resp = await fs._call_s3("list_objects_v2", **kw)
                for item in resp.get("Contents", []):
                    rest = item["Key"][len(base) :]
                    if len(rest) == 33 and rest[2] == "/":
                        out.add(rest[:2] + rest[3:])
                if not resp.get("IsTruncated"):
                    return out
                token = resp.get("NextContinuationToken")

        return self._run(listing)

    def upload(self, cid: str, data: bytes) -> None:
        self.upload_many({cid: data})

    def upload_many(self, objs: dict[str, bytes]) -> None:
        """Upload several objects in parallel (each a single atomic PUT)."""
        fs = self.fs

        async def put(item: tuple[str, bytes]) -> None:
            cid, data = item
            self.requests += 1
            await fs._call_s3("put_object", Bucket=self.bucket, Key=self._key(cid), Body=data)
            self.bytes_up += len(data)

        self._run(self._gather, put, list(objs.items()))

    def download(self, ids: list[str]) -> dict[str, bytes]:
        fs = self.fs

        async def get(cid: str) -> bytes:
            self.requests += 1
            try:
                data = await fs._cat_file(f"{self.bucket}/{self._key(cid)}")
            except FileNotFoundError:
                raise self.missing(cid) from None
            self.bytes_down += len(data)
            return data

        return dict(zip(ids, self._run(self._gather, get, ids), strict=True))


def _s3_error(exc: BaseException, remote: RemoteStore) -> RemoteError:
    """Turn what boto/aiohttp/s3fs raise into one line a user can act on."""
    kind = type(exc).__name__
    text = str(exc)
    low = text.lower()
    if kind in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return RemoteError(
            f"no AWS credentials for {remote.describe()}; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(or AWS_PROFILE) and retry"
        )
    if isinstance(exc, PermissionError) or any(
        s in low for s in ("accessdenied", "access denied", "invalidaccesskeyid", "signaturedoesnotmatch", "forbidden")
    ):
        return RemoteError(
            f"{remote.describe()} refused the credentials ({text.splitlines()[0][:120] if text else kind}); "
            "check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE"
        )
    if "nosuchbucket" in low or ("bucket" in low and "not exist" in low):
        bucket = getattr(remote, "bucket", "?")
        return RemoteError(f"bucket '{bucket}' of {remote.describe()} does not exist; create it or fix the URL")
    if any(
        s in kind for s in ("EndpointConnectionError", "ConnectTimeout", "ClientConnector", "ConnectionError", "Timeout")
    ) or isinstance(exc, ConnectionError | TimeoutError):
        endpoint = os.environ.get("AWS_ENDPOINT_URL", "the S3 endpoint")
        return RemoteError(f"cannot reach {remote.describe()} at {endpoint}; check the network and AWS_ENDPOINT_URL")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return _os_error(exc, remote)
    return RemoteError(f"{remote.describe()} failed: {kind}: {text.splitlines()[0][:160] if text else ''}")


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


def store_for_url(name: str, url: str, base: Path | None) -> RemoteStore:
    """A RemoteStore for a store URL (a directory, ``file://`` or ``s3://``)."""
    if url.startswith(("s3://", "s3a://")):
        return S3Remote(name, url)
    p = local_path(url, base)
    if p is None:
        raise UsageError(f"unsupported chunk store URL '{url}'; use a path or s3://bucket/prefix")
    return PathRemote(name, p.resolve())


def resolve(repo, name: str, url: str | None = None) -> RemoteStore:
    """The chunk store of git remote ``name`` (whose git URL may be passed, as pre-push does)."""
    cwd = repo.worktree or repo.git_dir
    configured = _git_config(f"coral.remote.{name}.url", cwd) or shared_config(
        f"coral.remote.{name}.url", cwd, repo.worktree
    )
    if configured:
        return store_for_url(name, configured, cwd)
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
    return PathRemote(name, repo_store_dir(p.resolve()))


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
