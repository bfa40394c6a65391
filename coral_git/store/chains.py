"""Delta-chain bookkeeping shared by every writer of packs: depths of chains and size-bounded batches.

One home for two small facts that pushes, remote gc, repack and the base re-chooser all need: how
deep an object sits below its keyframe (so bases are written before their deltas), and how to cut an
ordered list of objects into packs of bounded size without reordering it (so a delta never lands in
an earlier pack than its base).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

T = TypeVar("T")


def chain_depths(base_of: Mapping[str, str | None]) -> Callable[[str], int]:
    """A memoised ``depth(cid)``: 0 for an object whose base is not in ``base_of`` (a keyframe, or a
    base that is already in place), else one more than its base. Iterative (chains may be long) and
    safe on a cycle in damaged metadata (the cycle is cut where it is met)."""
    depth: dict[str, int] = {}

    def of(cid: str) -> int:
        chain: list[str] = []
        cur: str | None = cid
        while cur is not None and cur in base_of and cur not in depth and cur not in chain:
            chain.append(cur)
            cur = base_of[cur]
        d = depth.get(cur, -1) if cur is not None else -1
        for c in reversed(chain):
            d += 1
            depth[c] = d
        return depth[cid]

    return of


def cut_by_size(items: Iterable[T], size_of: Callable[[T], int], max_bytes: int) -> Iterator[list[T]]:
    """Consecutive batches of at most ``max_bytes`` (an item bigger than that gets a batch of its own),
    in the order given."""
    batch: list[T] = []
    size = 0
    for it in items:
        n = size_of(it)
        if batch and size + n > max_bytes:
            yield batch
            batch, size = [], 0
        batch.append(it)
        size += n
    if batch:
        yield batch
