"""Every fact about a dtype code, in one place: its width, its chunking item size.

Dtype codes are safetensors' (``F32``, ``BF16``, ``F8_E4M3``…); the torch reader maps torch dtypes onto
them. This module is at the bottom of the package: it imports nothing from coral_git.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # numpy only for the fp8 tables: the filter's start-up imports this module without it
    import numpy as np

# Bits per element for every dtype code we know. Codes follow safetensors; torch dtypes are mapped
# onto them by the torch reader. Sub-byte dtypes (F4, F6_*) are chunked as plain bytes.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E4M3": 8,
    "F8_E5M2": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C32": 32,
    "I64": 64,
    "U64": 64,
    "F64": 64,
    "C64": 64,
    "C128": 128,
    "QI8": 8,
    "QU8": 8,
    "QI32": 32,
}


def itemsize(dtype: str) -> int:
    """Bytes per element used for chunking and byte grouping (1 for sub-byte and unknown dtypes)."""
    bits = DTYPE_BITS.get(dtype, 8)
    if bits % 8:
        return 1
    # complex numbers are grouped per real component
    if dtype.startswith("C"):
        return bits // 16
    return bits // 8


# 8-bit floats: (exponent bits, mantissa bits, bias, kind). kind: "ieee" (E5M2: inf and NaNs like IEEE),
# "fn" (only S.1111.111 is NaN, no inf), "fnuz" (0x80 is the only NaN, no inf, no negative zero).
FP8_FORMATS: dict[str, tuple[int, int, int, str]] = {
    "F8_E4M3": (4, 3, 7, "fn"),
    "F8_E5M2": (5, 2, 15, "ieee"),
    "F8_E4M3FNUZ": (4, 3, 8, "fnuz"),
    "F8_E5M2FNUZ": (5, 2, 16, "fnuz"),
}
# dtypes decoded through a 256-entry table: the fp8 formats and the E8M0 scale format (2^(c-127), 0xFF NaN)
TABLE_DTYPES = frozenset({*FP8_FORMATS, "F8_E8M0"})
_tables: dict[str, np.ndarray] = {}


def fp8_values(dtype: str) -> np.ndarray:
    """float64 value of each of the 256 codes of an 8-bit float dtype (``TABLE_DTYPES``); no ml_dtypes needed."""
    table = _tables.get(dtype)
    if table is None:
        table = _tables[dtype] = _fp8_table(dtype)
    return table


def _fp8_table(dtype: str) -> np.ndarray:
    import numpy as np

    out = np.empty(256, dtype=np.float64)
    if dtype == "F8_E8M0":
        out[:] = [2.0 ** (c - 127) for c in range(256)]
        out[255] = math.nan
        return out
    exp, man, bias, kind = FP8_FORMATS[dtype]
    emax = (1 << exp) - 1
    for c in range(256):
        s, e, m = c >> 7, (c >> man) & emax, c & ((1 << man) - 1)
        v = m / (1 << man) * 2.0 ** (1 - bias) if e == 0 else (1 + m / (1 << man)) * 2.0 ** (e - bias)
        if kind == "ieee" and e == emax:
            v = math.inf if m == 0 else math.nan
        elif (kind == "fn" and e == emax and m == (1 << man) - 1) or (kind == "fnuz" and c == 0x80):
            v = math.nan
        out[c] = -v if s else v
    return out


# ggml tensor types (GGUF): the codes GGUF stores and the block each packs its elements into. Plain types
# map onto the codes above; block-quantized types keep ggml's own name (``Q4_K``), and a block of
# ``block`` elements always takes ``bytes`` bytes, so chunks are cut between blocks. Figures follow
# ggml.h / gguf-py's ``GGML_QUANT_SIZES`` (type codes 4, 5, 31-33, 36-38 are retired).
class GgmlType(NamedTuple):
    """One ggml type: the dtype name used in pointers, elements per block and bytes per block."""

    name: str
    block: int
    bytes: int


GGML_TYPES: dict[int, GgmlType] = {
    0: GgmlType("F32", 1, 4),
    1: GgmlType("F16", 1, 2),
    2: GgmlType("Q4_0", 32, 18),
    3: GgmlType("Q4_1", 32, 20),
    6: GgmlType("Q5_0", 32, 22),
    7: GgmlType("Q5_1", 32, 24),
    8: GgmlType("Q8_0", 32, 34),
    9: GgmlType("Q8_1", 32, 40),
    10: GgmlType("Q2_K", 256, 84),
    11: GgmlType("Q3_K", 256, 110),
    12: GgmlType("Q4_K", 256, 144),
    13: GgmlType("Q5_K", 256, 176),
    14: GgmlType("Q6_K", 256, 210),
    15: GgmlType("Q8_K", 256, 292),
    16: GgmlType("IQ2_XXS", 256, 66),
    17: GgmlType("IQ2_XS", 256, 74),
    18: GgmlType("IQ3_XXS", 256, 98),
    19: GgmlType("IQ1_S", 256, 50),
    20: GgmlType("IQ4_NL", 32, 18),
    21: GgmlType("IQ3_S", 256, 110),
    22: GgmlType("IQ2_S", 256, 82),
    23: GgmlType("IQ4_XS", 256, 136),
    24: GgmlType("I8", 1, 1),
    25: GgmlType("I16", 1, 2),
    26: GgmlType("I32", 1, 4),
    27: GgmlType("I64", 1, 8),
    28: GgmlType("F64", 1, 8),
    29: GgmlType("IQ1_M", 256, 56),
    30: GgmlType("BF16", 1, 2),
    34: GgmlType("TQ1_0", 256, 54),
    35: GgmlType("TQ2_0", 256, 66),
    39: GgmlType("MXFP4", 32, 17),
    40: GgmlType("NVFP4", 64, 36),
    41: GgmlType("Q1_0", 128, 18),
}

# Block-quantized dtypes by pointer name: (elements per block, bytes per block).
BLOCK_DTYPES: dict[str, tuple[int, int]] = {t.name: (t.block, t.bytes) for t in GGML_TYPES.values() if t.block > 1}
