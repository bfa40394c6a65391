"""The interface every remote chunk store implements (directory, S3, Git LFS server)."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import RemoteError


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
