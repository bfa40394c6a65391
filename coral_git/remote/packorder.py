"""Which objects share a wire pack: those that the same versions need, together.

Where a server ignores ``Range`` (giftless, some proxies), a checkout downloads every pack that holds
an object it needs, whole. The push hands objects over bases first (level by level), so packs in
arrival order mix versions, and checking out one version pulls packs full of others. Here each
object of a push gets its **needers**: the file versions (pointers) of the pushed commits whose
checkout needs it — those that name its chunk, and those that need a delta stored against it. Objects
with the same needers go together, groups oldest first (then the widely shared ones first). What any
version needs is then a union of whole groups: the oldest version reads its keyframes only, the
newest its own objects and the unchanged chunks every version shares, not the packs of the versions
in between.

A group that does not fit the current pack starts a new one (unless that pack is under ``1/CUT``
full) and is spread evenly over as few packs as hold it: no small tail of one group lands in a pack
full of another, and small groups still share packs instead of making one request each. The cut is
a pure function of the objects, their bases and their versions, so a retried push cuts the same
packs (same bytes, same oids) and uploads only what did not arrive.
"""

from __future__ import annotations

from collections.abc import Iterable

from .wirepack import WireItem

CUT = 4


def needers(named_by: dict[str, list[int]], bases: dict[str, str | None]) -> dict[str, frozenset[int]]:
    """Per object of the push (``bases`` keys): the versions whose checkout needs it. A base needed by
    a delta of this push inherits the delta's versions (chains are short: remoteMaxChain)."""
    out = {c: set(named_by.get(c, ())) for c in bases}
    for c in bases:
        seen = {c}
        cur = bases[c]
        while cur is not None and cur in out and cur not in seen:
            seen.add(cur)
            out[cur] |= out[c]
            cur = bases[cur]
    return {c: frozenset(v) for c, v in out.items()}


def plan_packs(
    items: Iterable[WireItem], named_by: dict[str, list[int]], bases: dict[str, str | None], max_bytes: int
) -> list[list[WireItem]]:
    """``items`` (arrival order, duplicates dropped) cut into packs of at most ``max_bytes`` each (an
    object bigger than that alone), grouped by needers; objects no version names follow, as they came.

    ``named_by``: per chunk, the versions (smaller = older) whose pointers name it; ``bases``: the
    delta base of each object (None for a keyframe).
    """
    unique: list[WireItem] = []
    seen: set[str] = set()
    for it in items:
        if it.cid not in seen:
            seen.add(it.cid)
            unique.append(it)
    need = needers(named_by, {it.cid: bases.get(it.cid) for it in unique})
    keyed = []
    for n, it in enumerate(unique):
        vs = need[it.cid]
        keyed.append(((0, min(vs), -len(vs), tuple(sorted(vs)), n) if vs else (1, 0, 0, (), n), it))
    keyed.sort(key=lambda kv: kv[0])
    groups: list[list[WireItem]] = []
    last = None
    for key, it in keyed:
        if key[:4] != last:
            groups.append([])
            last = key[:4]
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
