"""Clean of a file coral has just written itself: one hash pass instead of a full clean.

After a direct checkout (filter/direct.py) the index must learn the new file's stat data, and git can
only do that by cleaning the file again. The writer lists what it wrote (``path NUL pointer NUL``
records) in the file named by ``CORAL_DIRECT_FRESH`` for that one ``git update-index`` call; clean
of such a path only hashes what git sends and answers the recorded pointer when the whole-file
hash and size match (the pointer of those bytes, already verified on the way out). Anything else
is refused, so git records nothing and the next ``git status`` cleans the file the normal way.
"""

from __future__ import annotations

import os

import xxhash

from ..core import pointer as ptr
from ..errors import StoreError

ENV = "CORAL_DIRECT_FRESH"


def fresh_pointers(chunk_bytes: int) -> dict[str, ptr.Pointer]:
    """The records of the file ``CORAL_DIRECT_FRESH`` names (only pointers of this chunk size)."""
    name = os.environ.get(ENV)
    if not name:
        return {}
    try:
        with open(name, "rb") as f:
            parts = f.read().split(b"\0")
    except OSError:
        return {}
    out = {}
    for path, text in zip(parts[0::2], parts[1::2], strict=False):
        p = ptr.parse_or_none(text)
        if p is not None and p.chunk_bytes == chunk_bytes:
            out[path.decode("utf-8", "surrogateescape")] = p
    return out


class FreshSpool:
    """A Spool look-alike that only hashes: the content is expected to be ``pointer``'s file."""

    def __init__(self, pointer: ptr.Pointer, path: str) -> None:
        self.pointer = pointer
        self.path = path
        self.size = 0
        self._hash = xxhash.xxh3_128()

    @property
    def file_id(self) -> str:
        return self._hash.hexdigest()

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        self._hash.update(data)

    def streamed(self) -> ptr.Pointer:
        if self.size != self.pointer.size or self.file_id != self.pointer.file_id:
            raise StoreError(f"{self.path} changed while coral refreshed its index entry; 'git status' will re-check it")
        return self.pointer

    def view(self) -> bytes:
        raise StoreError("internal error: a fresh file is only ever cleaned")

    def close(self) -> None:
        pass
