"""The delta base of a tensor at a new path, chosen among candidate versions by a small trial encode.

A tensor with no previous version at its own path (a fine-tune added as ``ft/variant_3.safetensors``)
has several plausible bases: recent versions of the same name and shape, and the versions other paths
hold in the index, HEAD and the commit's parents. Whichever encodes smallest on a sample wins. The
trial is bounded: at most ``MAX_CANDIDATES`` candidates, each tried once per tensor on at most
``SAMPLES`` windows of ``WINDOW`` bytes of the first chunk that needs storing (so a tensor costs at
most ``MAX_CANDIDATES × SAMPLES × WINDOW`` bytes of trial encoding plus one base decode per candidate).
The choice only changes what the store holds, never a chunk id or the pointer.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from ..errors import StoreError
from .chunkstore import ChunkStore
from .objects import HEADER_SIZE

MAX_CANDIDATES = 4
SAMPLES = 2
WINDOW = 128 << 10


class BaseChoice:
    """Candidate versions (chunk id lists of equal length) of one tensor; the first chunk stored picks."""

    def __init__(self, candidates: Sequence[Sequence[str]]) -> None:
        self.candidates = [tuple(c) for c in candidates[:MAX_CANDIDATES]]
        self.chosen: tuple[str | None, ...] | None = None
        self.sizes: list[float] = []  # trial sizes per candidate (inf: no delta possible), for tests and stats
        self.keyframe_size = 0.0  # trial size without a base
        self._lock = threading.Lock()

    def base(self, store: ChunkStore, index: int, raw: np.ndarray, itemsize: int) -> str | None:
        """The base id for chunk ``index`` (bytes ``raw``), None for a keyframe; the first call runs
        the trial on ``raw``."""
        if self.chosen is None:
            with self._lock:  # other chunks of the tensor wait for the one trial rather than repeat it
                if self.chosen is None:
                    self.chosen = self._pick(store, index, raw, itemsize)
        return self.chosen[index]

    def _pick(self, store: ChunkStore, index: int, raw: np.ndarray, itemsize: int) -> tuple[str | None, ...]:
        windows = sample_windows(raw.size, itemsize)
        codec = store.delta_encoder()
        by_target: dict[str, float] = {}
        sizes: list[float] = []
        for ids in self.candidates:
            found = store.delta_target(ids[index], raw.size)
            if found is None:
                sizes.append(float("inf"))
                continue
            target = found[0]
            if target not in by_target:  # siblings fanned out from one keyframe try it once
                try:
                    base_raw = store.get(target)
                except StoreError:
                    by_target[target] = float("inf")
                else:
                    by_target[target] = float(
                        sum(len(codec.encode(raw[s:e], itemsize, base_raw[s:e])) for s, e in windows)
                    )
            sizes.append(by_target[target])
        self.sizes = sizes
        best = min(range(len(sizes)), key=lambda k: (sizes[k], k))  # ties: the earlier candidate
        # no base at all is a candidate too: a delta on unrelated weights of the same shape (another
        # base model) can pay against the raw bytes and still lose to a keyframe
        self.keyframe_size = float(sum(len(store.keyframe(raw[s:e], itemsize)) - HEADER_SIZE for s, e in windows))
        if self.keyframe_size <= sizes[best]:
            return (None,) * len(self.candidates[best])
        return self.candidates[best]


class Pick(NamedTuple):
    """A chunk's base still to be chosen: chunk ``index`` of the tensor ``choice`` decides for."""

    choice: BaseChoice
    index: int


def sample_windows(size: int, itemsize: int) -> list[tuple[int, int]]:
    """Up to SAMPLES windows of WINDOW bytes spread over a chunk of ``size`` bytes, element-aligned."""
    if size <= SAMPLES * WINDOW:
        return [(0, size)]
    step = size // SAMPLES
    unit = max(1, itemsize)
    out = []
    for k in range(SAMPLES):
        start = (k * step + (step - WINDOW) // 2) // unit * unit
        out.append((start, start + WINDOW))
    return out


def choose(candidates: Sequence[Sequence[str]], nchunks: int) -> list[str | Pick | None]:
    """Per-chunk bases for a tensor of ``nchunks`` chunks: None without candidates, else a shared
    :class:`BaseChoice` (the candidates in the order given, duplicates once, and no base at all)."""
    fits: list[tuple[str, ...]] = []
    for c in candidates:
        t = tuple(c)
        if len(t) == nchunks and t not in fits:
            fits.append(t)
    if not fits:
        return [None] * nchunks
    choice = BaseChoice(fits)
    return [Pick(choice, i) for i in range(nchunks)]
