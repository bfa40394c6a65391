"""Which objects share a wire pack: one file version's objects together, versions oldest first.

Where a server ignores ``Range`` (giftless, some proxies), a checkout downloads every pack that holds
an object it needs, whole. The push hands objects over bases first (level by level), so a pack could
mix the keyframes of one version with the deltas of another, and checking out one version would pull
packs full of others. Here the objects of a push are sorted by the file version (pointer) that first
names them — oldest commit first, then the order within the pointer — and a version starts a new pack
once the current one is at least ``1/CUT`` full: a checkout reads its own packs (plus those of the
bases it needs), and small versions still share packs instead of making one request each.

The order is a pure function of the objects and their ranks, so a retried push cuts the same packs
(same bytes, same oids) and uploads only what did not arrive.
"""

from __future__ import annotations

from collections.abc import Iterable

from .wirepack import WireItem

Rank = tuple[int, int]  # (file version, oldest first; position of the object in it)
CUT = 4


def plan_packs(items: Iterable[WireItem], ranks: dict[str, Rank], max_bytes: int) -> list[list[WireItem]]:
    """``items`` (arrival order, duplicates dropped) cut into packs of at most ``max_bytes`` each (an
    object bigger than that alone), ordered by ``ranks``; objects without a rank follow, as they came.

    A version that does not fit the current pack starts a new one (unless that pack is under
    ``1/CUT`` full) and is spread evenly over as few packs as hold it: no small tail of one version
    lands in a pack full of the next.
    """
    seen: set[str] = set()
    keyed = []
    for n, it in enumerate(items):
        if it.cid in seen:
            continue
        seen.add(it.cid)
        rank = ranks.get(it.cid)
        keyed.append(((0, *rank, n) if rank is not None else (1, 0, 0, n), it))
    keyed.sort(key=lambda kv: kv[0])
    groups: list[list[WireItem]] = []
    last = None
    for key, it in keyed:
        if key[:2] != last:
            groups.append([])
            last = key[:2]
        groups[-1].append(it)
    packs: list[list[WireItem]] = []
    cur: list[WireItem] = []
    size = 0
    for group in groups:
        total = sum(it.length for it in group)
        if cur and (size * CUT >= max_bytes or size + total > max_bytes):
            packs.append(cur)
            cur, size = [], 0
        if size + total <= max_bytes:
            cur.extend(group)
            size += total
            continue
        share = total / -(-total // max_bytes)  # as few packs as hold it, about equally full
        done = slot = 0
        for it in group:
            want = int((done + it.length / 2) // share)  # the share the middle of this object falls in
            if cur and (want > slot or size + it.length > max_bytes):
                packs.append(cur)
                cur, size = [], 0
            slot = max(slot, want)
            cur.append(it)
            size += it.length
            done += it.length
    if cur:
        packs.append(cur)
    return packs
