"""Model-merging strategies and the float conversions they need.

A strategy decides a tensor that both sides changed differently. ``conflict``, ``ours`` and
``theirs`` only pick; the numeric ones (``average``, ``weighted``, ``task-arithmetic``, ``ties``)
combine the tensors block by block in float32 (float64 for F64 tensors) and the result is cast
back to the tensor's dtype (round to nearest, ties to even, for every float format). Integer,
bool, complex, quantized and sub-byte tensors are never combined numerically.

Strategies are small registered classes, chosen by a spec string ``name[:parameter]``, e.g.
``weighted:0.3`` or ``ties:0.2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import ClassVar

import numpy as np

from ..dtypes import FP8_FORMATS, fp8_values
from ..errors import UsageError

# ---------------------------------------------------------------------------------------------
# float formats
# ---------------------------------------------------------------------------------------------

_NATIVE = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def _fp8_table(dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Decode table of an 8-bit float (``dtypes.fp8_values``) in float32, plus what encoding needs."""
    kind = FP8_FORMATS[dtype][3]
    table = fp8_values(dtype).astype(np.float32)
    pos = [c for c in range(128) if np.isfinite(table[c])]
    vals = table[pos]
    max_code = pos[-1]
    ulp = float(vals[-1] - vals[-2])
    # a virtual value one step above the largest finite one: reaching it means overflow
    vals = np.append(vals, np.float32(float(vals[-1]) + ulp))
    codes = np.array([*pos, max_code + 1], dtype=np.int64)
    nan_code = 0x80 if kind == "fnuz" else 0x7F
    # past the largest finite value: E5M2 → inf; E4M3FN saturates (as torch casts); FNUZ → NaN
    overflow = {"ieee": 0x7C, "fn": max_code, "fnuz": nan_code}[kind]
    return table, vals, codes, nan_code, overflow


_FP8 = FP8_FORMATS
_fp8_cache: dict[str, tuple] = {}


def _fp8(dtype: str) -> tuple:
    t = _fp8_cache.get(dtype)
    if t is None:
        t = _fp8_cache[dtype] = _fp8_table(dtype)
    return t


FLOAT_DTYPES = frozenset({*_NATIVE, "BF16", *_FP8})


def is_float(dtype: str) -> bool:
    """True for the dtypes numeric strategies may combine."""
    return dtype in FLOAT_DTYPES


def compute_dtype(dtype: str) -> type[np.floating]:
    """float64 for F64 tensors, float32 for every narrower float."""
    return np.float64 if dtype == "F64" else np.float32


def to_float(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Raw little-endian bytes of a float tensor → float32 (float64 for F64) values."""
    if dtype in _NATIVE:
        return raw.view(_NATIVE[dtype]).astype(compute_dtype(dtype))
    if dtype == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
    if dtype in _FP8:
        return _fp8(dtype)[0][raw]
    raise ValueError(f"{dtype} is not a float dtype")


def from_float(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32/float64 values → raw bytes of ``dtype``, rounding to nearest, ties to even."""
    if dtype in _NATIVE:
        with np.errstate(over="ignore"):
            return np.ascontiguousarray(x, dtype=_NATIVE[dtype]).view(np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "BF16":
        u = x.view(np.uint32)
        out = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype("<u2")
        nan = np.isnan(x)
        if nan.any():
            out[nan] = ((u[nan] >> 16) | 0x40).astype("<u2")
        return out.view(np.uint8)
    if dtype in _FP8:
        return _encode_fp8(x, dtype).view(np.uint8)
    raise ValueError(f"{dtype} is not a float dtype")


def _encode_fp8(x: np.ndarray, dtype: str) -> np.ndarray:
    _, vals, codes, nan_code, overflow = _fp8(dtype)
    a = np.abs(x)
    hi = np.clip(np.searchsorted(vals, a, side="left"), 1, len(vals) - 1)
    lo = hi - 1
    dlo, dhi = a - vals[lo], vals[hi] - a
    up = (dhi < dlo) | ((dhi == dlo) & (codes[hi] % 2 == 0))
    idx = np.where(up, hi, lo)
    code = codes[idx]
    code = np.where(idx == len(vals) - 1, overflow, code)
    code = np.where(a == 0, 0, code)
    neg = np.signbit(x) & (code != 0)
    if _FP8[dtype][3] == "fnuz":
        neg &= code != nan_code
    code = np.where(neg, code | 0x80, code)
    code = np.where(np.isnan(x), nan_code, code)
    return code.astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# strategies
# ---------------------------------------------------------------------------------------------

Blocks = Callable[[], Iterator[tuple[np.ndarray | None, np.ndarray, np.ndarray]]]


class Strategy:
    """How to decide a tensor both sides changed differently.

    ``pick`` names the side a picking strategy takes (None for ``conflict`` and numeric ones).
    Numeric strategies implement :meth:`combine` on float blocks of base (None when there is no
    common base), ours and theirs, all of the same length.
    """

    name: ClassVar[str]
    pick: ClassVar[str | None] = None
    numeric: ClassVar[bool] = False
    needs_base: ClassVar[bool] = False
    param_name: ClassVar[str | None] = None
    param_default: ClassVar[float | None] = None

    def __init__(self, param: float | None = None) -> None:
        self.param = self.param_default if param is None else param

    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"

    def prepare(self, blocks: Blocks, numel: int) -> None:
        """Whole-tensor statistics gathered before :meth:`combine` (TIES thresholds)."""

    def combine(self, base: np.ndarray | None, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        raise NotImplementedError


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES[cls.name] = cls
    return cls


@register
class Conflict(Strategy):
    """Leave it as a conflict (the default)."""

    name = "conflict"


@register
class Ours(Strategy):
    """Take our side of every conflicting tensor."""

    name = "ours"
    pick = "ours"


@register
class Theirs(Strategy):
    """Take their side of every conflicting tensor."""

    name = "theirs"
    pick = "theirs"


@register
class Weighted(Strategy):
    """``α·ours + (1 − α)·theirs`` (α = ``coral.merge.alpha``, default 0.5)."""

    name = "weighted"
    numeric = True
    param_name = "alpha"
    param_default = 0.5

    def combine(self, base: np.ndarray | None, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        a = ours.dtype.type(self.param)
        return a * ours + (ours.dtype.type(1) - a) * theirs


@register
class Average(Weighted):
    """Uniform soup: ``0.5·ours + 0.5·theirs``."""

    name = "average"
    param_name = None

    def __init__(self, param: float | None = None) -> None:
        if param is not None:
            raise UsageError("strategy 'average' takes no parameter; use 'weighted:ALPHA'")
        super().__init__(0.5)

    @property
    def spec(self) -> str:
        return self.name


@register
class TaskArithmetic(Strategy):
    """``base + λ·((ours − base) + (theirs − base))`` (λ = ``coral.merge.lambda``, default 1)."""

    name = "task-arithmetic"
    numeric = True
    needs_base = True
    param_name = "lambda"
    param_default = 1.0

    def combine(self, base: np.ndarray | None, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        assert base is not None
        lam = base.dtype.type(self.param)
        return base + lam * ((ours - base) + (theirs - base))


@register
class Ties(Strategy):
    """TIES-merging: trim each task vector to its top-k magnitudes, elect a sign, disjoint mean.

    The parameter is the density k (fraction of each task vector kept, ``coral.merge.tiesDensity``,
    default 0.2); the merged task vector is scaled by ``coral.merge.lambda`` (default 1). Values
    equal to the k-th largest magnitude are all kept.
    """

    name = "ties"
    numeric = True
    needs_base = True
    param_name = "density"
    param_default = 0.2

    def __init__(self, param: float | None = None, lam: float = 1.0) -> None:
        super().__init__(param)
        self.lam = lam
        self.thresholds: tuple[float, float] = (0.0, 0.0)

    def prepare(self, blocks: Blocks, numel: int) -> None:
        self.thresholds = (self._threshold(blocks, numel, 1), self._threshold(blocks, numel, 2))

    def _threshold(self, blocks: Blocks, numel: int, side: int) -> float:
        """The k-th largest |side − base| (one float32 array of the tensor's size in memory)."""
        k = math.ceil(self.param * numel)
        if k >= numel:
            return 0.0
        if k <= 0:
            return math.inf
        mags: np.ndarray | None = None
        pos = 0
        for b, o, t in blocks():
            assert b is not None
            d = np.abs((o if side == 1 else t) - b)
            if mags is None:
                mags = np.empty(numel, dtype=d.dtype)
            mags[pos : pos + d.size] = d
            pos += d.size
        assert mags is not None and pos == numel
        return float(np.partition(mags, numel - k)[numel - k])

    def combine(self, base: np.ndarray | None, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
        assert base is not None
        ft = base.dtype.type
        d1, d2 = ours - base, theirs - base
        d1 = np.where(np.abs(d1) >= self.thresholds[0], d1, ft(0))
        d2 = np.where(np.abs(d2) >= self.thresholds[1], d2, ft(0))
        sign = np.sign(d1 + d2)
        a1 = (np.sign(d1) == sign) & (d1 != 0)
        a2 = (np.sign(d2) == sign) & (d2 != 0)
        total = np.where(a1, d1, ft(0)) + np.where(a2, d2, ft(0))
        count = a1.astype(base.dtype) + a2.astype(base.dtype)
        merged = np.where(count > 0, total / np.maximum(count, ft(1)), ft(0))
        return base + ft(self.lam) * merged


def parse_spec(spec: str, params: dict[str, float] | None = None) -> Strategy:
    """``name[:param]`` → a strategy; ``params`` gives configured defaults (alpha, lambda, density)."""
    params = params or {}
    name, _, raw = spec.strip().partition(":")
    cls = STRATEGIES.get(name)
    if cls is None:
        raise UsageError(f"unknown merge strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    value: float | None = None
    if raw:
        if cls.param_name is None:
            raise UsageError(f"merge strategy {name!r} takes no parameter")
        try:
            value = float(raw)
        except ValueError:
            raise UsageError(f"merge strategy {spec!r}: {raw!r} is not a number") from None
    elif cls.param_name is not None:
        value = params.get(cls.param_name)
    if value is not None and not math.isfinite(value):
        raise UsageError(f"merge strategy {spec!r}: parameter must be finite")
    if cls is Ties:
        if value is not None and not 0 <= value <= 1:
            raise UsageError(f"ties density {value} is out of range [0, 1]")
        return Ties(value, params.get("lambda", 1.0))
    return cls(value) if cls.param_name is not None else cls()
