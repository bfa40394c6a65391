"""ggml tensor types: the codes GGUF stores and the block each one packs its elements into.

Kept in one table so it can move with the other dtype facts. Plain types map onto the
safetensors dtype codes of :mod:`layout`; block-quantized types keep ggml's own name (``Q4_K``),
and a block of ``block`` elements always takes ``bytes`` bytes, so chunks are cut between blocks.
Figures follow ggml.h / gguf-py's ``GGML_QUANT_SIZES`` (type codes 4, 5, 31-33, 36-38 are retired).
"""

from __future__ import annotations

from typing import NamedTuple


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
