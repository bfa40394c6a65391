"""store/chains.py: chain depths and size-bounded batches (shared by push, remote gc, repack)."""

from __future__ import annotations

from coral_git.store.chains import chain_depths, cut_by_size


def test_chain_depths_count_steps_to_a_base_outside_the_map_and_survive_a_cycle() -> None:
    depth = chain_depths({"k": None, "a": "k", "b": "a", "c": "b", "x": "elsewhere", "p": "q", "q": "p"})
    assert [depth(c) for c in ("k", "a", "b", "c", "x")] == [0, 1, 2, 3, 0]
    assert {depth("p"), depth("q")} <= {0, 1}  # damaged metadata: cut where met, no endless loop


def test_cut_by_size_keeps_order_and_bounds_every_batch_but_an_oversized_item() -> None:
    sizes = [3, 4, 10, 1, 1, 6]
    batches = list(cut_by_size(range(len(sizes)), lambda i: sizes[i], 7))
    assert batches == [[0, 1], [2], [3, 4], [5]]
    assert [i for b in batches for i in b] == list(range(len(sizes)))
    assert list(cut_by_size([], len, 7)) == []
