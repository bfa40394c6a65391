"""Upload side of a packing remote: objects handed over batch by batch are gathered into packs.

``push_chunks`` hands a remote 32 objects at a time, bases before the deltas that use them. A
``PackQueue`` spools them to an anonymous temp file (memory holds one object, not a pack), cuts the
stream into packs with ``wirepack.cut`` as soon as a pack is full and gives each batch to the
remote's ``send``; ``flush`` sends the rest. Packs are sent in the order cut, one after the other,
so a pack is visible only after every earlier one: a delta's base is never in a later pack, and an
interrupted push leaves a self-contained prefix on the remote.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .wirepack import DEFAULT_PACK_BYTES, WireItem, cut

PACK_BYTES_ENV = "CORAL_WIRE_PACK_BYTES"  # smaller packs for tests (shared with the LFS remote)


def pack_bytes(default: int = DEFAULT_PACK_BYTES) -> int:
    """The size packs are cut at: ``CORAL_WIRE_PACK_BYTES`` or ``default``."""
    raw = os.environ.get(PACK_BYTES_ENV)
    return int(raw) if raw and raw.isdigit() and int(raw) > 0 else default


class PackQueue:
    """Objects waiting to go up in packs of at most ``max_bytes``; ``send(items)`` writes one pack."""

    def __init__(self, send: Callable[[list[WireItem]], None], max_bytes: int, tmp_dir: Path | None = None) -> None:
        self.send = send
        self.max_bytes = max_bytes
        self.tmp_dir = tmp_dir
        self._items: list[WireItem] = []
        self._bytes = 0
        self._spool = None
        self._end = 0

    def add(self, cid: str, data: bytes) -> None:
        if self._items and self._bytes + len(data) > self.max_bytes:
            self._send()
        if self._spool is None:
            if self.tmp_dir is not None:
                self.tmp_dir.mkdir(parents=True, exist_ok=True)
            self._spool = tempfile.TemporaryFile(dir=self.tmp_dir)  # gone with the process, whatever happens
            self._end = 0
        f, offset, length = self._spool, self._end, len(data)
        os.pwrite(f.fileno(), data, offset)
        self._end += length
        self._items.append(WireItem(cid, length, lambda: os.pread(f.fileno(), length, offset)))
        self._bytes += length

    def _send(self) -> None:
        items, self._items, self._bytes = self._items, [], 0
        for batch in cut(items, max(self.max_bytes, sum(it.length for it in items))):
            self.send(batch)
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def flush(self) -> None:
        """Send what is queued (the last, partly filled pack)."""
        if self._items:
            self._send()
