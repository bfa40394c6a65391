"""What a push sends for each chunk position: the newest version a keyframe, older ones deltas on newer.

Adds can only delta a new chunk against an *older* version, so a store that was never repacked holds
every version of a chunk as a delta on the first one's keyframe. Pushed as stored, a clone of the
latest version would download the oldest version's keyframes too. The push therefore encodes each
chunk position (its pushed versions, newest first: ``git.pointers.position_groups``) the way the
repacker does (store/rebase.py): the newest version — and any version a pushed tip names — goes as a
keyframe, the older ones as deltas in the repacker's spine-and-chains tree of depth
``coral.remoteMaxChain`` (every ``D``-th version a delta on the newest, the ones between a chain of
one-version steps below it; a parent that could not be a delta sends its children to the nearest
keyframe above). A delta that does not pay (``DELTA_PAYS`` of the raw chunk) goes as a keyframe.

Cost is bounded: per object at most one encode (a keyframe for a newest version stored as a delta,
a delta for an older one; a keyframe also when that delta does not pay), nothing when the stored
object already is what would be sent (a repacked store). Each version is decoded once (a small
cache follows the local chains). Positions are encoded on a small thread pool (zstd and numpy
release the GIL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..store.chunkstore import DELTA_PAYS, ChunkStore
from ..store.objects import HEADER_SIZE, ObjectHeader, unpack_header
from ..store.rebase import RawCache, spine_parent


@dataclass(frozen=True, slots=True)
class Encoded:
    """One object as it goes up: its bytes, its delta base (None: keyframe) and chain depth."""

    cid: str
    data: bytes
    base: str | None
    depth: int
    encoded: bool  # encoded anew (not the stored bytes)


def claim(groups: Sequence[Sequence[str]], todo: set[str]) -> list[list[str]]:
    """Per position, the ids this push uploads that no earlier position claimed (newest first)."""
    claimed: set[str] = set()
    out = []
    for g in groups:
        members = [c for c in dict.fromkeys(g) if c in todo and c not in claimed]
        if members:
            claimed.update(members)
            out.append(members)
    return out


def encode_position(
    store: ChunkStore,
    members: list[str],
    read: Callable[[str], bytes],
    *,
    max_chain: int,
    keys: frozenset[str] | set[str] = frozenset(),
) -> list[Encoded]:
    """The objects for one position's ``members`` (newest first, none on the remote yet), in an
    order where a base comes before its deltas; ``read`` gives an object's stored bytes."""
    raws = RawCache(store, keep=6)
    codec = store.delta_encoder()
    out: list[Encoded] = []
    raw_len: dict[str, int] = {}
    last_key: Encoded | None = None
    for k, cid in enumerate(members):
        stored = read(cid)
        hdr = unpack_header(cid, stored)
        raw_len[cid] = hdr.raw_len
        choice: Encoded | None = None
        if k and max_chain > 0 and cid not in keys:
            parent = out[spine_parent(k, max_chain)]
            cand = parent if parent.depth < max_chain else last_key
            if cand is not None and raw_len[cand.cid] == hdr.raw_len:
                depth = cand.depth + 1
                if hdr.base == cand.cid and hdr.codec == store.delta_codec:  # stored as we would send it
                    data = ObjectHeader(hdr.codec, hdr.itemsize, depth, hdr.raw_len, cand.cid).pack() + stored[HEADER_SIZE:]
                    choice = Encoded(cid, data, cand.cid, depth, False)
                else:
                    raw = raws.get(cid)
                    payload = codec.encode(raw, hdr.itemsize, raws.get(cand.cid))
                    if len(payload) < DELTA_PAYS * raw.size:
                        data = ObjectHeader(store.delta_codec, hdr.itemsize, depth, raw.size, cand.cid).pack() + payload
                        choice = Encoded(cid, data, cand.cid, depth, True)
        if choice is None:
            if hdr.base is None:
                choice = Encoded(cid, stored, None, 0, False)
            else:
                choice = Encoded(cid, store.keyframe(raws.get(cid), hdr.itemsize), None, 0, True)
            last_key = choice
        out.append(choice)
    return out
