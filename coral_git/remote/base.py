"""The interface every remote chunk store implements (directory, S3, Git LFS server)."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from ..errors import RemoteError

PARALLEL = 16  # requests in flight per remote


def object_key(cid: str) -> str:
    """Where a loose object lies in a store (local, directory remote, or S3 under its prefix)."""
    return f"objects/{cid[:2]}/{cid[2:]}"


class RemoteStore:
    """Objects of one remote store. Subclasses implement the three operations."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.bytes_up = 0
        self.bytes_down = 0
        self.requests = 0

    def describe(self) -> str:
        return f"remote '{self.name}' ({self.url})" if self.name != self.url else f"remote {self.url}"

    def has_many(self, ids: Iterable[str]) -> set[str]:
        """The subset of ``ids`` that the remote holds."""
        raise NotImplementedError

    def upload(self, cid: str, data: bytes) -> None:
        """Store object ``cid`` atomically: readers see nothing or the whole object."""
        raise NotImplementedError

    def download(self, ids: list[str]) -> dict[str, bytes]:
        """Objects ``ids``, fetched in parallel; RemoteError naming the first one the remote lacks."""
        raise NotImplementedError

    def missing(self, cid: str) -> RemoteError:
        return RemoteError(
            f"chunk {cid} is missing from {self.describe()}; "
            "run 'git coral push' from a repository that has it, then retry"
        )


def os_error(exc: OSError, remote: RemoteStore) -> RemoteError:
    """What a failed file operation on ``remote`` means, in one line a user can act on."""
    if exc.errno == errno.ENOSPC:
        return RemoteError(f"{remote.describe()} is full (no space left on device); free space there and retry")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RemoteError(f"{remote.describe()} is not writable ({exc.strerror}); check its permissions")
    return RemoteError(f"cannot use {remote.describe()}: {exc.strerror or exc}")
