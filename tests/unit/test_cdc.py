"""Content-defined boundaries: deterministic, cover the bytes, and realign after an early insertion."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from coral_git.core.cdc import cdc_params, cdc_ranges
from coral_git.core.chunking import byte_chunks


def data(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def ids(buf: bytes, ranges: list[tuple[int, int]]) -> set[bytes]:
    return {buf[s:e] for s, e in ranges}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 300_000), chunk=st.sampled_from([1024, 4096, 65536]))
def test_ranges_cover_in_order_within_bounds(n: int, chunk: int) -> None:
    buf = data(n, n)
    ranges = cdc_ranges(buf, chunk)
    assert ranges == cdc_ranges(bytes(buf), chunk)  # bytes alone decide
    assert [s for s, _ in ranges] == [0, *(e for _, e in ranges[:-1])] if ranges else n == 0
    assert (ranges[-1][1] if ranges else 0) == n
    lo, _, hi = cdc_params(chunk)
    assert all(lo <= e - s <= hi for s, e in ranges[:-1]) and all(e - s <= hi for s, e in ranges)


def test_insertion_early_restores_only_a_chunk_or_two() -> None:
    chunk = 64 << 10
    v1 = data(8 << 20)
    v2 = v1[:100] + b"X" + v1[100:]
    new_cdc = [(s, e) for s, e in cdc_ranges(v2, chunk) if v2[s:e] not in ids(v1, cdc_ranges(v1, chunk))]
    new_fixed = [(s, e) for s, e in byte_chunks(len(v2), chunk) if v2[s:e] not in ids(v1, byte_chunks(len(v1), chunk))]
    assert sum(e - s for s, e in new_cdc) <= 4 * cdc_params(chunk)[2]
    assert sum(e - s for s, e in new_fixed) == len(v2)  # fixed cuts: everything after the edit is new


def test_params_clamped() -> None:
    assert cdc_params(1 << 20) == (256 << 10, 768 << 10, 4 << 20)
    assert cdc_params(16) == (64, 256, 1024)
    assert cdc_params(1 << 30) == (1 << 20, 4 << 20, 16 << 20)
