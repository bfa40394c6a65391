"""Wire packs are cut one file version after another, oldest first (remote/packorder.py)."""

from __future__ import annotations

from coral_git.remote.packorder import plan_packs
from coral_git.remote.wirepack import WireItem


def item(cid: str, n: int) -> WireItem:
    return WireItem(cid, n, lambda: b"")


def test_versions_oldest_first_and_never_a_small_tail_in_the_next_versions_pack() -> None:
    # arrival order as a push hands them over (bases first): keyframes of v0, deltas of v2 then v1
    arrive = [item(f"a{i}", 30) for i in range(7)] + [item(f"c{i}", 30) for i in range(3)] + [item(f"b{i}", 30) for i in range(3)]
    ranks = {**{f"a{i}": (-2, i) for i in range(7)}, **{f"b{i}": (-1, i) for i in range(3)}, **{f"c{i}": (0, i) for i in range(3)}}
    packs = plan_packs([*arrive, item("a0", 30)], ranks, 100)
    names = [[it.cid[0] for it in p] for p in packs]
    # v0 (210 bytes) spread over 3 packs of its own, then v1 and v2 (90 bytes each) one pack each
    assert names == [["a"] * 2, ["a"] * 3, ["a"] * 2, ["b"] * 3, ["c"] * 3]
    assert [it.cid for p in packs for it in p][:7] == [f"a{i}" for i in range(7)]
    assert all(sum(it.length for it in p) <= 100 for p in packs)


def test_small_versions_share_packs_and_unranked_objects_follow_in_arrival_order() -> None:
    arrive = [item("z1", 10), item("v1", 10), item("v0", 10), item("z0", 10), item("big", 500)]
    packs = plan_packs(arrive, {"v0": (-1, 0), "v1": (0, 0)}, 100)
    # the unranked objects do not fit beside v0+v1: a pack of their own (the big one alone)
    assert [[it.cid for it in p] for p in packs] == [["v0", "v1"], ["z1", "z0"], ["big"]]
    assert plan_packs(arrive, {}, 1000) == [arrive]  # no ranks: arrival order, one pack
