"""Chunk positions of the reachable history, newest version first: what the repacker re-chooses bases over.

A position is ``(path, tensor name, chunk index)`` (``(path, None, index)`` for a fixed-grid skeleton
chunk). Its versions are the chunk ids the pointers at that path hold, in history order from newest:
what the indexes stage first, then commits children before parents. Content-defined skeleton chunks
(opaque files) have no stable position and are left out: the store keeps their encoding.

When gc re-chooses (``git coral gc`` always; ``gc --auto`` only when the work is bounded, see
:func:`auto_worth_it`), every pack is rewritten once, so the cost of one re-choosing is one pass over
the store: each version decoded once, tried against a few candidates on samples, the winner encoded.
"""

from __future__ import annotations

from collections.abc import Callable

from ..git import reachability
from ..git.pointers import position_groups
from ..store import packs
from ..store.rebase import DEFAULT_WINDOW, RebaseResult, rebase

AUTO_SHARE = 4  # gc --auto re-chooses when the packed store is at most this many times the loose bytes


def positions(reach: reachability.Reachable, files: dict[str, reachability.Files]) -> list[list[str]]:
    """Chunk ids per position, newest version first (ids may repeat across positions)."""
    commits = set(reach.commits)
    order = [label for label in files if label not in commits and files[label] and _is_index(label)]
    order += list(reversed(reach.commits))
    pointers = ((path, reach.pointers.get(blob)) for label in order for path, blob in files.get(label, ()))
    return position_groups((path, p) for path, p in pointers if p is not None)


def _is_index(label: str) -> bool:
    return label == "index" or label.endswith(": index")


def auto_worth_it(store) -> bool:
    """For ``gc --auto``: re-choose only when the loose bytes are a fair share of the packed ones
    (``AUTO_SHARE``), so that the rewrite costs a bounded multiple of what the adds wrote since — a
    training loop's store is rewritten a geometric number of times, not once per gc. In between,
    new versions are deltas on the newest keyframe (two decodes), so nothing slows down."""
    src = packs.attach(store)
    loose = sum(st.st_size for _, st in packs.loose_stats(store.loose.root))
    loose += sum(p.size for p in src.packs if p.version == packs.VERSION_ADD)  # adds' packs: new since the last gc
    packed = sum(p.size for p in src.packs if p.version != packs.VERSION_ADD)
    return loose > 0 and packed <= AUTO_SHARE * loose


def rechoose(
    store,
    reach: reachability.Reachable,
    files: dict[str, reachability.Files],
    *,
    depth: int | None = None,
    window: int = DEFAULT_WINDOW,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> RebaseResult:
    """Re-choose the delta bases of the reachable versions (the caller holds ``store.lock()`` and
    has packed the loose objects): any reachable version then decodes in at most ``depth + 1``
    steps (``coral.maxChain`` by default)."""
    on_item = (lambda k, n: progress("re-choosing bases", k, n)) if progress else None
    return rebase(
        store, positions(reach, files), depth=store.max_chain if depth is None else depth, window=window,
        force=force, on_item=on_item,
    )
