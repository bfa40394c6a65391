"""Re-choosing delta bases over the versions of each chunk position, like ``git repack -f --window --depth``.

Adds never rewrite what is stored, so an add can only delta a new chunk against an *older* version
(fanned out from a keyframe). Once history is known, the repacker can do better: for every chunk
position (given as a *group*: the ids of its reachable versions, newest first) the newest version is
a keyframe and the older ones hang below it in a spine-and-chains tree (:func:`_parent`): one
keyframe per position, most deltas between neighbouring versions, no chain deeper than ``depth``.
The tree's base competes with the nearest newer versions shallow enough to keep the tree's depths
(``window`` candidates in all; another must encode ``TREE_BONUS`` smaller), and a keyframe is
written when no delta beats one. Any version then decodes in at most ``depth + 1`` steps, and the
newest (what the next add deltas against, and what is checked out most) in one.

Cost is bounded: each version is decoded once (a small cache of raw chunks follows the chains), and
tried against at most ``window`` candidates on sample windows of the chunk (``basechoice``); only the
winner is encoded in full. A group already in that shape (newest a keyframe, every base inside the
group, nothing deeper than ``depth``, nothing loose) is copied as is unless ``force``. Groups are
encoded on a thread pool (numpy and zstd release the GIL) a few groups ahead of the pack writer, so
memory holds only those groups.

Crash safety: every packed object is written into new packs, in an order where each object's new
base comes before it, and the old packs are deleted only after all new ones are fsynced and in
place. Packs are read newest first, so each new pack switches its objects to their new encodings at
once, and their new bases are already switched (or in the same pack): at every instant the served
encodings form chains without cycles. Groups with a loose copy of any member are left as they are
(loose copies are read before packs, so they could not be switched atomically).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..errors import StoreError
from .basechoice import sample_windows
from .chains import cut_by_size
from .objects import HEADER_SIZE, ObjectHeader, unpack_header
from .packs import PackItem, _pack_reader, _rekey, attach, inventory, write_pack

DEFAULT_WINDOW = 4  # candidates tried per version (git's --window is 10; chunk positions are far smaller)
TREE_BONUS = 1.03  # a base other than the tree's must encode this much smaller to be taken
AHEAD = 2  # groups encoded ahead of the pack writer, per worker (memory: a few groups of encoded versions)


@dataclass
class RebaseResult:
    """What a re-choosing repack did."""

    groups: int = 0  # chunk positions considered
    rechosen: int = 0  # positions whose bases were chosen again
    objects: int = 0  # objects written into the new packs
    reencoded: int = 0  # objects encoded anew (the rest were copied, at most with a new depth)
    keyframes: int = 0  # keyframes among the re-chosen positions' objects
    max_depth: int = 0  # deepest chain among the re-chosen positions
    rekeyed: int = 0  # other objects made keyframes to keep their chains within the bound
    packs_written: int = 0
    packs_removed: int = 0
    depths: dict[str, int] = field(default_factory=dict)  # new depth of every re-chosen object


def rebase(
    store,
    groups: Sequence[Sequence[str]],
    *,
    depth: int,
    window: int = DEFAULT_WINDOW,
    force: bool = False,
    workers: int | None = None,
    pack_bytes: int = 1 << 30,
    on_item: Callable[[int, int], None] | None = None,
) -> RebaseResult:
    """Rewrite every pack of ``store`` with bases re-chosen for ``groups`` (the caller holds ``store.lock()``).

    ``groups``: per chunk position, the ids of its versions newest first (an id claimed by an
    earlier group is skipped). Objects outside every group keep their encoding, except that one
    whose chain would now exceed ``depth`` becomes a keyframe. Loose objects are not touched.
    """
    src = attach(store)
    src.rescan(force=True)
    inv = inventory(store, src)
    res = RebaseResult()
    old_packs = list(src.packs)
    headers: dict[str, ObjectHeader] = {}

    def header(cid: str) -> ObjectHeader:
        h = headers.get(cid)
        if h is None:
            pack, entry = inv[cid].packed[0]  # type: ignore[index]
            h = headers[cid] = unpack_header(cid, bytes(pack.read_header(entry)))
        return h

    claimed: set[str] = set()
    plans: list[list[str]] = []  # groups to re-choose
    kept_groups: list[list[str]] = []  # groups copied as they are
    for g in groups:
        members = [c for c in dict.fromkeys(g) if c not in claimed and c in inv and inv[c].packed]
        if not members:
            continue
        claimed.update(members)
        res.groups += 1
        if any(inv[c].loose is not None for c in members):
            kept_groups.append(members)
            continue
        if force or not _in_shape(members, header, depth):
            plans.append(members)
        else:
            kept_groups.append(members)
    res.rechosen = len(plans)

    items: list[PackItem] = []
    n_workers = workers or min(2, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="coral-rebase") if plans else None
    later = {c for m in plans for c in m[1:]}  # objects the plan turns into deltas

    def steady(cid: str) -> bool:
        """A base that stays a keyframe: a newest version may keep it as a cross-path base (what an
        add chose for a file at a new path, e.g. a fine-tune on its base model) — one step, no cycle."""
        s = inv.get(cid)
        return s is not None and bool(s.packed) and cid not in later and header(cid).base is None

    feeder = _Feeder(pool, [lambda m=m: _plan_group(store, m, header, depth, window, steady) for m in plans],
                     AHEAD * n_workers) if pool else None
    for gi, members in enumerate(plans):
        for cid in members:
            items.append(PackItem(cid, int(inv[cid].mtime), (lambda gi=gi, cid=cid: feeder.get(gi, cid))))  # type: ignore[union-attr]
    hints: dict[str, int] = {}
    for members in kept_groups:
        for cid in members:
            pack, entry = inv[cid].packed[0]  # type: ignore[index]
            items.append(PackItem(cid, int(inv[cid].mtime), _pack_reader(pack, entry)))
    for cid in plans_ids(plans):
        hints[cid] = depth  # an upper bound until the plan is made
    others: list[PackItem] = []
    for cid, s in inv.items():
        if cid in claimed or not s.packed:
            continue
        pack, entry = s.packed[0]
        others.append(PackItem(cid, int(s.mtime), _pack_reader(pack, entry)))
    if others:
        others, res.rekeyed = _rekey(store, others, depth, hints=hints)
    items.extend(others)

    try:
        written = set()
        # a base always precedes its dependants, so every prefix is complete
        batches = list(cut_by_size(items, lambda it: inv[it.cid].size, pack_bytes)) or [[]]
        done = 0
        for batch in batches:
            if not batch:
                continue
            cb = (lambda k, base=done: on_item(base + k, len(items))) if on_item else None
            written.add(write_pack(src.root, batch, cb))
            done += len(batch)
            res.packs_written += 1
        res.objects = done
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if feeder is not None:
        res.reencoded = feeder.reencoded
        res.keyframes = feeder.keyframes
        res.depths = feeder.depths
        res.max_depth = max(feeder.depths.values(), default=0)
    # every object is safely in the new packs: now the old ones go
    for p in old_packs:
        if p.path in written:
            continue  # same content, same name: just rewritten in place
        p.path.unlink(missing_ok=True)
        res.packs_removed += 1
    src.rescan(force=True)
    return res


def plans_ids(plans: list[list[str]]) -> list[str]:
    return [c for m in plans for c in m]


def _in_shape(members: list[str], header: Callable[[str], ObjectHeader], depth: int) -> bool:
    """True when a group already is what re-choosing makes of it: newest a keyframe, every other
    version a delta on a member, every chain within ``depth``."""
    inside = set(members)
    if header(members[0]).base is not None:
        return False
    for cid in members[1:]:
        h = header(cid)
        # a keyframe below the newest is re-chosen too: gc makes one of a version whose base was
        # discarded (a deleted branch), and a delta on a neighbour usually beats it
        if h.base is None or h.base not in inside or h.run > depth:
            return False
    return True


class _Feeder:
    """Runs group jobs on a pool a bounded number ahead of the (sequential) pack writer."""

    def __init__(self, pool: ThreadPoolExecutor, jobs: list[Callable[[], dict[str, tuple[bytes, int, bool]]]], ahead: int) -> None:
        self.pool = pool
        self.jobs = jobs
        self.ahead = max(1, ahead)
        self.futures: dict[int, Future] = {}
        self.results: dict[int, dict[str, tuple[bytes, int, bool]]] = {}
        self.next = 0
        self.reencoded = 0
        self.keyframes = 0
        self.depths: dict[str, int] = {}

    def get(self, gi: int, cid: str) -> bytes:
        while self.next < len(self.jobs) and self.next <= gi + self.ahead:
            self.futures[self.next] = self.pool.submit(self.jobs[self.next])
            self.next += 1
        if gi not in self.results:
            self.results[gi] = self.futures.pop(gi).result()
        out = self.results[gi]
        data, d, encoded = out.pop(cid)
        if not out:
            del self.results[gi]
        self.depths[cid] = d
        self.reencoded += encoded
        self.keyframes += d == 0
        return data


class _Raws:
    """Raw chunks of one group, decoded once: chains are followed only down to a cached version."""

    def __init__(self, store, keep: int) -> None:
        self.store = store
        self.keep = keep
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, cid: str) -> np.ndarray:
        hit = self.cache.get(cid)
        if hit is not None:
            self.cache.move_to_end(cid)
            return hit
        chain: list[tuple[str, ObjectHeader, bytes]] = []
        cur: str | None = cid
        base_raw: np.ndarray | None = None
        while cur is not None:
            if cur in self.cache:
                base_raw = self.cache[cur]
                break
            if len(chain) > 256 or any(c == cur for c, _, _ in chain):
                return self.store.get(cid)  # let the store's own checks name the damage
            data = self.store.read_object(cur)
            hdr = unpack_header(cur, data)
            chain.append((cur, hdr, data))
            cur = hdr.base
        raw = base_raw
        for oid, hdr, data in reversed(chain):
            raw = self.store.decode(oid, hdr, data, raw, "")
            self._put(oid, raw)
        assert raw is not None
        return raw

    def _put(self, cid: str, raw: np.ndarray) -> None:
        self.cache[cid] = raw
        self.cache.move_to_end(cid)
        while len(self.cache) > self.keep:
            self.cache.popitem(last=False)


def _plan_group(
    store, members: list[str], header: Callable[[str], ObjectHeader], max_depth: int, window: int,
    steady: Callable[[str], bool] = lambda c: False,
) -> dict[str, tuple[bytes, int, bool]]:
    """``{id: (object bytes, new depth, encoded anew)}`` for one group, newest first."""
    raws = _Raws(store, keep=window + 4)
    codec = store.delta_encoder()
    placed: list[tuple[str, int, int]] = []  # (id, depth, raw length), in plan order
    out: dict[str, tuple[bytes, int, bool]] = {}
    for k, cid in enumerate(members):
        old = header(cid)
        raw = raws.get(cid)
        itemsize = old.itemsize
        cands: list[tuple[str, int]] = []
        if k and max_depth > 0:
            parent = _parent(k, max_depth)
            budget = 1 + (k % max_depth if max_depth > 1 else 0)  # the depth the tree gives version k
            pc, pd, pn = placed[parent]
            if pd < max_depth and pn == raw.size:
                cands.append((pc, pd))
            # other newer versions shallow enough that later versions keep the tree's depths
            # (a revert or a branch can make one of them far cheaper than the tree's base)
            for c, d, n in reversed(placed):
                if len(cands) >= window:
                    break
                if d < budget and n == raw.size and c != pc:
                    cands.append((c, d))
        choice: tuple[str, int, bytes | None] | None = None
        if k == 0 and max_depth > 0 and old.base is not None and old.base not in members and steady(old.base):
            choice = (old.base, 1, None)  # keeps the base another path's version gave it
        elif cands:
            windows = sample_windows(raw.size, itemsize)
            whole = windows == [(0, raw.size)]
            best: tuple[float, int, str, bytes | None] | None = None
            for j, (c, d) in enumerate(cands):
                base_raw = raws.get(c)
                if whole:
                    payload: bytes | None = codec.encode(raw, itemsize, base_raw)
                    size = float(len(payload))
                else:
                    payload = None
                    size = float(sum(len(codec.encode(raw[s:e], itemsize, base_raw[s:e])) for s, e in windows))
                if j:
                    size *= TREE_BONUS  # leaving the tree must pay: it keeps later versions shallow
                if best is None or size < best[0]:
                    best = (size, d, c, payload)
            assert best is not None
            if whole:
                key_size = float(len(store.keyframe(raw, itemsize)) - HEADER_SIZE)
            else:
                key_size = float(sum(len(store.keyframe(raw[s:e], itemsize)) - HEADER_SIZE for s, e in windows))
            if best[0] < key_size:
                choice = (best[2], best[1] + 1, best[3])
        if choice is None:
            d = 0
            if old.base is None:
                data, encoded = _with_run(store, cid, 0), False
            else:
                data, encoded = store.keyframe(raw, itemsize), True
        else:
            base, d, payload = choice
            if old.base == base and old.codec == store.delta_codec:
                data, encoded = _with_run(store, cid, d), False  # the stored delta is the one we would write
            else:
                if payload is None:
                    payload = codec.encode(raw, itemsize, raws.get(base))
                data = ObjectHeader(store.delta_codec, itemsize, d, raw.size, base).pack() + payload
                encoded = True
        _kill_point()
        placed.append((cid, d, raw.size))
        out[cid] = (data, d, encoded)
    return out


def _parent(k: int, depth: int) -> int:
    """Version ``k``'s base in the spine-and-chains tree for chains of at most ``depth`` deltas:
    every ``depth``-th version is a delta on the newest (the spine, one step), and the versions
    between hang off it in a chain of one-version steps (the cheapest deltas). One keyframe per
    position, most deltas between neighbours, depth ``1 + k % depth`` at most ``depth``."""
    if depth <= 1 or k % depth == 0:
        return 0
    return k - 1


def _with_run(store, cid: str, run: int) -> bytes:
    """The stored bytes of ``cid`` with the header's depth set to ``run`` (the payload is unchanged)."""
    data = store.read_object(cid)
    old = unpack_header(cid, data)
    return ObjectHeader(old.codec, old.itemsize, run, old.raw_len, old.base).pack() + data[HEADER_SIZE:]


def _kill_point() -> None:
    """Nothing, normally. Tests set ``CORAL_TEST_REBASE_SLOW`` (seconds per object) to widen the
    window in which a kill -9 lands inside the re-encoding."""
    slow = os.environ.get("CORAL_TEST_REBASE_SLOW")
    if slow:
        import time

        try:
            time.sleep(float(slow))
        except ValueError:
            raise StoreError(f"CORAL_TEST_REBASE_SLOW = {slow!r} is not a number of seconds") from None


# reused by the push's newest-first encoder (remote/newestfirst.py)
RawCache = _Raws
spine_parent = _parent
