"""The chunk store: content-addressed chunks, deduplicated, delta-encoded newest-first.

A chunk's id is the xxh3-128 of its raw bytes, so ids never depend on how a chunk is encoded.
Encoding follows git's packs: the newest version of a chunk is a keyframe (fast to check out),
and when it arrives the previous version is re-encoded as a delta against it if that is smaller.
Delta chains are bounded by ``max_chain``; every read is verified against the id.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import numpy as np
import xxhash

from ..errors import CorruptObjectError, MissingObjectError, StoreError
from .codecs import Codec, RawCodec, codec
from .objects import HEADER_SIZE, LooseObjects, ObjectHeader, unpack_header

DEFAULT_MAX_CHAIN = 16
# codecs for new objects; every registered codec stays readable. Keyframes stay bg-zstd: rot-planes (4)
# is only 0.1-1.4% smaller and decodes slower (benchmarks/bench_codec.py), and the newest version is
# the one checked out most.
KEYFRAME_CODEC = 1  # bg-zstd
DELTA_CODEC = 5  # sub-zz-ctx-planes (was 2, sub-zz-bg-zstd): 8-36% smaller deltas, slower to code


def chunk_id(raw: bytes | memoryview | np.ndarray) -> str:
    """The id of a chunk: xxh3-128 of its raw bytes, as 32 hex digits."""
    return xxhash.xxh3_128_hexdigest(raw)


class ObjectSource(Protocol):
    """Anything that can hand out stored objects by id (loose files, packs)."""

    def has(self, cid: str) -> bool: ...
    def read(self, cid: str) -> bytes | None: ...


class ChunkStore:
    """Objects under ``root`` (``$GIT_COMMON_DIR/coral``)."""

    def __init__(self, root: Path, *, max_chain: int = DEFAULT_MAX_CHAIN, level: int = 1) -> None:
        self.root = Path(root)
        self.loose = LooseObjects(self.root / "objects")
        self.sources: list[ObjectSource] = [self.loose]
        self.max_chain = max(0, max_chain)
        self.level = level
        self.fetcher: Callable[[list[str]], None] | None = None
        self._codecs = threading.local()

    # -- reading -----------------------------------------------------------------------------
    def has(self, cid: str) -> bool:
        return any(s.has(cid) for s in self.sources)

    def read_object(self, cid: str, context: str = "") -> bytes:
        """The stored bytes of object ``cid`` (header + payload), fetching from a remote if set."""
        data = self.read_object_local(cid)
        if data is None and self.fetcher is not None:
            self.fetcher([cid])
            data = self.read_object_local(cid)
        if data is None:
            raise MissingObjectError(cid, context)
        return data

    def header(self, cid: str, context: str = "") -> ObjectHeader:
        return unpack_header(cid, self.read_object(cid, context)[:HEADER_SIZE])

    def get(self, cid: str, context: str = "") -> np.ndarray:
        """The verified raw bytes of chunk ``cid`` as a uint8 array, following delta bases."""
        chain: list[tuple[str, ObjectHeader, bytes]] = []
        seen: set[str] = set()
        cur: str | None = cid
        while cur is not None:
            if cur in seen or len(chain) > max(self.max_chain, 255) + 1:
                raise CorruptObjectError(cid, "delta chain is cyclic or too long", context)
            seen.add(cur)
            data = self.read_object(cur, context)
            hdr = unpack_header(cur, data)
            chain.append((cur, hdr, data))
            cur = hdr.base
        raw: np.ndarray | None = None
        for oid, hdr, data in reversed(chain):
            raw = self._decode(oid, hdr, data, raw, context)
        assert raw is not None
        return raw

    def _decode(self, oid: str, hdr: ObjectHeader, data: bytes, base: np.ndarray | None, context: str) -> np.ndarray:
        try:
            c = self._codec(hdr.codec)
            if c.delta and (base is None or base.size != hdr.raw_len):
                raise ValueError("delta base has the wrong length")
            raw = c.decode(memoryview(data)[HEADER_SIZE:], hdr.itemsize, hdr.raw_len, base if c.delta else None)
        except KeyError:
            raise CorruptObjectError(oid, f"unknown codec {hdr.codec}", context) from None
        except (ValueError, RuntimeError, TypeError) as exc:
            raise CorruptObjectError(oid, f"payload does not decode ({exc})", context) from None
        if chunk_id(raw) != oid:
            raise CorruptObjectError(oid, "content does not match its id", context)
        return raw

    def _codec(self, code: int) -> Codec:
        cache = getattr(self._codecs, "c", None)
        if cache is None:
            cache = self._codecs.c = {}
        c = cache.get(code)
        if c is None:
            c = cache[code] = codec(code, self.level)
        return c

    # -- writing -----------------------------------------------------------------------------
    def put(self, raw: np.ndarray, itemsize: int, base: str | None = None, cid: str | None = None) -> bool:
        """Store chunk ``raw`` (uint8 array) unless present; True when it was written.

        ``base`` names the previous version of the same chunk; when given and present, that
        version is re-encoded as a delta against this one if it gets smaller that way.
        """
        cid = cid or chunk_id(raw)
        if self.has(cid) and self._freshen(cid):
            return False
        plain = self._codec(KEYFRAME_CODEC).encode(raw, itemsize)
        code = KEYFRAME_CODEC
        if len(plain) >= raw.size:
            plain, code = raw.tobytes(), RawCodec.code
        rewrite = self._plan_rewrite(raw, itemsize, base) if base and base != cid else None
        run = rewrite[1].run + 1 if rewrite else 0
        self.loose.write(cid, ObjectHeader(code, itemsize, run, raw.size, None).pack() + plain)
        if rewrite:
            self._rewrite_base(base, rewrite[1], rewrite[0], cid)  # type: ignore[arg-type]
        return True

    def _freshen(self, cid: str) -> bool:
        """Mark a present object as just stored, so gc's grace period covers the add that needs it
        (git's "freshen"). False when its loose file vanished meanwhile (gc took it): store it again."""
        try:
            os.utime(self.loose.path(cid))
            return True
        except FileNotFoundError:
            return any(s.has(cid) for s in self.sources if s is not self.loose)
        except OSError:
            return True  # not ours to touch (read-only or shared store): it is there

    def _plan_rewrite(self, raw: np.ndarray, itemsize: int, base: str) -> tuple[bytes, ObjectHeader] | None:
        """Encode ``base`` as a delta against ``raw``; return it when it beats the stored form."""
        try:
            data = self.read_object_local(base)
            if data is None:
                return None
            hdr = unpack_header(base, data)
            if hdr.raw_len != raw.size or hdr.run + 1 > self.max_chain:
                return None
            base_raw = self.get(base)
        except StoreError:
            return None  # a damaged base is fsck's business; this chunk is stored as a keyframe
        payload = self._codec(DELTA_CODEC).encode(base_raw, itemsize, raw)
        if len(payload) >= len(data) - HEADER_SIZE:
            return None
        return payload, hdr

    def _rewrite_base(self, base: str, old: ObjectHeader, payload: bytes, new: str) -> None:
        """Replace ``base`` by a delta against keyframe ``new``, unless either changed meanwhile."""
        with self.lock():
            cur = self.read_object_local(base)
            new_data = self.read_object_local(new)
            if cur is None or new_data is None:
                return
            if unpack_header(base, cur) != old or unpack_header(new, new_data).base is not None:
                return
            hdr = ObjectHeader(DELTA_CODEC, old.itemsize, old.run, old.raw_len, new)
            self.loose.write(base, hdr.pack() + payload)

    def read_object_local(self, cid: str) -> bytes | None:
        """The stored bytes of ``cid`` from this machine's sources only (no remote fetch)."""
        for s in self.sources:
            data = s.read(cid)
            if data is not None:
                return data
        return None

    @contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock over re-encoding, packing and gc in this store."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
