"""Merge strategies and float casts, checked against numpy and torch computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coral_git.errors import UsageError
from coral_git.merge.strategies import STRATEGIES, from_float, is_float, parse_spec, to_float

torch = pytest.importorskip("torch")

TORCH_DTYPES = {
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
    "F8_E4M3FNUZ": torch.float8_e4m3fnuz,
    "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
}


def _specials() -> np.ndarray:
    edge = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 3.4e38, 448, 464, 470, 480, 500, -465]
    edge += [2.0**-7, 2.0**-9, 3 * 2.0**-10, 1.5 * 2.0**-9, 1e-9, -1e-9, 57344, 61440, 65504, 65520]
    # exact ties between adjacent bf16 values: round to even must pick the even one
    ties = (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32)
    return np.concatenate([np.array(edge, dtype=np.float32), ties, -ties])


@pytest.mark.parametrize("dtype", sorted(TORCH_DTYPES))
def test_casts_round_like_torch(dtype: str) -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([(rng.standard_normal(20000) * 50).astype(np.float32), _specials()])
    got = to_float(from_float(x, dtype), dtype)
    want = torch.from_numpy(x).to(TORCH_DTYPES[dtype]).float().numpy()
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    assert same.all(), (x[~same][:5], got[~same][:5], want[~same][:5])


@pytest.mark.parametrize("dtype", sorted(TORCH_DTYPES))
def test_every_bit_pattern_decodes_like_torch(dtype: str) -> None:
    td = TORCH_DTYPES[dtype]
    n = 1 << (8 * td.itemsize)
    raw = np.arange(n, dtype=np.uint16 if n > 256 else np.uint8).view(np.uint8)
    got = to_float(raw, dtype)
    want = torch.from_numpy(raw.copy()).view(td).float().numpy()
    assert ((got == want) | (np.isnan(got) & np.isnan(want))).all()
    finite = np.isfinite(got)
    # every finite value survives a round trip bit for bit (−0 of FNUZ formats does not exist)
    back = from_float(got[finite], dtype)
    assert np.array_equal(to_float(back, dtype), got[finite])


def test_bf16_ties_round_to_even() -> None:
    x = np.array([0x3F808000, 0x3F818000], dtype=np.uint32).view(np.float32)  # halfway cases
    assert from_float(x, "BF16").view("<u2").tolist() == [0x3F80, 0x3F82]


def test_native_floats_keep_precision() -> None:
    x = np.array([1 / 3], dtype=np.float64)
    assert to_float(from_float(x, "F64"), "F64")[0] == 1 / 3
    assert to_float(from_float(x, "F64"), "F64").dtype == np.float64
    assert to_float(from_float(x.astype(np.float32), "F32"), "F32").dtype == np.float32
    assert not is_float("I64") and not is_float("BOOL") and not is_float("C64") and is_float("BF16")


def _arrays(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = rng.standard_normal(n).astype(np.float32)
    return b, b + rng.standard_normal(n).astype(np.float32) * 0.1, b + rng.standard_normal(n).astype(np.float32) * 0.1


def test_average_weighted_and_task_arithmetic_formulas() -> None:
    b, o, t = _arrays(1000, 1)
    assert np.array_equal(parse_spec("average").combine(b, o, t), np.float32(0.5) * o + np.float32(0.5) * t)
    w = parse_spec("weighted:0.3").combine(b, o, t)
    assert np.array_equal(w, np.float32(0.3) * o + np.float32(0.7) * t)
    assert parse_spec("weighted", {"alpha": 0.8}).param == 0.8
    ta = parse_spec("task-arithmetic", {"lambda": 0.5}).combine(b, o, t)
    assert np.array_equal(ta, b + np.float32(0.5) * ((o - b) + (t - b)))


def ties_reference(b: np.ndarray, o: np.ndarray, t: np.ndarray, density: float, lam: float) -> np.ndarray:
    """TIES-merging on whole arrays (Yadav et al. 2023): trim, elect sign, disjoint mean."""
    deltas = []
    for x in (o, t):
        d = x - b
        k = math.ceil(density * d.size)
        if k >= d.size:
            deltas.append(d)
            continue
        thr = np.sort(np.abs(d))[::-1][k - 1] if k > 0 else np.inf
        deltas.append(np.where(np.abs(d) >= thr, d, 0).astype(np.float32))
    dm = np.stack(deltas)
    sign = np.sign(dm.sum(axis=0))
    agree = (np.sign(dm) == sign) & (dm != 0)
    count = agree.sum(axis=0)
    mean = np.where(count > 0, (dm * agree).sum(axis=0) / np.maximum(count, 1), 0)
    return (b + np.float32(lam) * mean.astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("density", [0.0, 0.2, 0.5, 1.0])
def test_ties_blockwise_matches_reference(density: float) -> None:
    b, o, t = _arrays(4099, 7)
    s = parse_spec(f"ties:{density}", {"lambda": 0.7})
    block = 1000

    def blocks():
        for i in range(0, b.size, block):
            yield b[i : i + block], o[i : i + block], t[i : i + block]

    s.prepare(blocks, b.size)
    got = np.concatenate([s.combine(*blk) for blk in blocks()])
    np.testing.assert_allclose(got, ties_reference(b, o, t, density, 0.7), rtol=0, atol=1e-6)


@given(st.lists(st.floats(-4, 4, width=32), min_size=3, max_size=60), st.sampled_from([0.1, 0.3, 0.9]))
@settings(max_examples=60, deadline=None)
def test_ties_property(vals: list[float], density: float) -> None:
    x = np.array(vals, dtype=np.float32)
    b, o, t = x, x[::-1].copy(), np.roll(x, 1)
    s = parse_spec(f"ties:{density}")
    s.prepare(lambda: iter([(b, o, t)]), b.size)
    np.testing.assert_allclose(s.combine(b, o, t), ties_reference(b, o, t, density, 1.0), atol=1e-5)


def test_spec_errors_are_usage_errors() -> None:
    for bad in ("nope", "average:0.3", "weighted:x", "ties:1.5", "weighted:nan", "ours:1"):
        with pytest.raises(UsageError):
            parse_spec(bad)
    assert {"conflict", "ours", "theirs", "average", "weighted", "task-arithmetic", "ties"} <= set(STRATEGIES)
    assert parse_spec("theirs").pick == "theirs" and parse_spec("conflict").pick is None


def test_tensor_rules_parse() -> None:
    from coral_git.merge.settings import parse_rules

    assert parse_rules("head.*=theirs; *=weighted:0.3;", "env") == [("head.*", "theirs"), ("*", "weighted:0.3")]
    for bad in ("head.*", "=ours", "x="):
        with pytest.raises(UsageError):
            parse_rules(bad, "env")
