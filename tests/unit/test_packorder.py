"""Wire packs hold what the same versions need (remote/packorder.py)."""

from __future__ import annotations

from coral_git.remote.packorder import needers, plan_packs
from coral_git.remote.wirepack import WireItem


def item(cid: str, n: int = 30) -> WireItem:
    return WireItem(cid, n, lambda: b"")


def test_each_version_reads_only_packs_of_objects_it_needs() -> None:
    # v0: keyframes a0..a6; v1: deltas b0..b2 on a0..a2, a3..a6 unchanged; v2: keyframes c0..c2, a3..a6
    named_by = {**{f"a{i}": [0] for i in range(3)}, **{f"a{i}": [0, 1, 2] for i in range(3, 7)},
                **{f"b{i}": [1] for i in range(3)}, **{f"c{i}": [2] for i in range(3)}}
    bases = {**{f"b{i}": f"a{i}" for i in range(3)}}
    # arrival as a push hands them over, bases first (and a duplicate)
    arrive = [item(c) for c in ["a0", "c0", "a1", "a2", "c1", "a3", "a4", "a5", "a6", "c2", "b2", "b0", "b1", "a0"]]
    assert needers(named_by, {it.cid: bases.get(it.cid) for it in arrive})["a1"] == {0, 1}
    packs = [[it.cid for it in p] for p in plan_packs(arrive, named_by, bases, 100)]
    # shared by all three, spread evenly over 2 packs; then what v0 and v1 share; then v1's, v2's own
    assert packs == [["a3", "a4"], ["a5", "a6"], ["a0", "a1", "a2"], ["b2", "b0", "b1"], ["c0", "c1", "c2"]]
    for v, want in ((0, 210), (1, 300), (2, 210)):
        need = {c for c, vs in named_by.items() if v in vs} | {bases[c] for c in bases if v in named_by[c]}
        read = sum(30 * len(p) for p in packs if need & set(p))
        assert read == want == 30 * len(need)


def test_small_groups_share_packs_and_unnamed_objects_follow_in_arrival_order() -> None:
    arrive = [item("z1", 10), item("v1", 10), item("v0", 10), item("z0", 10), item("big", 500)]
    packs = plan_packs(arrive, {"v0": [-1], "v1": [0]}, {}, 100)
    # v0 and v1 share a pack (each too small for its own); the unnamed ones do not fit beside them
    assert [[it.cid for it in p] for p in packs] == [["v0", "v1"], ["z1", "z0"], ["big"]]
    assert plan_packs(arrive, {}, {}, 1000) == [arrive]  # no versions known: arrival order, one pack
