"""One exception family: the CLI turns each into a one-line message and an exit code."""

from __future__ import annotations


class CoralError(Exception):
    """Base of every error coral-git reports to a user."""

    exit_code = 1


class UsageError(CoralError):
    """The command line or configuration asks for something impossible."""

    exit_code = 2


class NotARepositoryError(CoralError):
    """The current directory is not inside a git repository."""


class FormatError(CoralError):
    """A file claims a container format but its content is not valid for it."""


class PointerError(CoralError):
    """Text that should be a coral pointer does not parse."""


class StoreError(CoralError):
    """The chunk store cannot satisfy a read or a write."""


class MissingObjectError(StoreError):
    """A chunk named by a pointer is not in the store (nor any configured remote)."""

    def __init__(self, chunk_id: str, context: str = "") -> None:
        self.chunk_id = chunk_id
        self.context = context
        where = f" ({context})" if context else ""
        super().__init__(
            f"chunk {chunk_id} is missing from the store{where}; "
            "run 'git coral fetch' if it exists on a remote, or 'git coral fsck' to see what is affected"
        )


class CorruptObjectError(StoreError):
    """A stored object does not decode to the bytes its id names."""

    def __init__(self, chunk_id: str, detail: str, context: str = "") -> None:
        self.chunk_id = chunk_id
        self.context = context
        where = f" ({context})" if context else ""
        super().__init__(
            f"chunk {chunk_id} is corrupt: {detail}{where}; run 'git coral fsck' to find and isolate damaged objects"
        )


class CheckpointError(CoralError):
    """A checkpoint could not be written, found or restored."""


class RemoteError(StoreError):
    """A remote store cannot be reached, refuses us, or lacks something we need."""

    exit_code = 3


class MergeError(CoralError):
    """A merge cannot be computed or written (not a conflict: something is broken)."""
