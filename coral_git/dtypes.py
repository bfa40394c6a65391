"""Every fact about a dtype code, in one place: its width, its chunking item size.

Dtype codes are safetensors' (``F32``, ``BF16``, ``F8_E4M3``…); the torch reader maps torch dtypes onto
them. This module is at the bottom of the package: it imports nothing from coral_git.
"""

from __future__ import annotations

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
