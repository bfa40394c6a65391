"""The layout of a model file: tensor payload spans plus everything else (the skeleton).

A reader never copies tensor data: it only says where each tensor's bytes lie. Every byte of the
file that is not inside a span belongs to the skeleton, so ``skeleton + spans`` always rebuilds the
file exactly, whatever the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True, slots=True)
class TensorSpan:
    """Where one tensor's (or one storage's) raw bytes lie in the file."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


@dataclass(frozen=True)
class Layout:
    """A file seen as skeleton bytes plus tensor spans, sorted by offset and non-overlapping."""

    format: str
    size: int
    tensors: tuple[TensorSpan, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        pos = 0
        for t in self.tensors:
            if t.offset < pos or t.nbytes < 0 or t.end > self.size:
                raise ValueError(f"span {t.name!r} overlaps or lies outside the file")
            pos = t.end

    def gaps(self) -> list[tuple[int, int]]:
        """The skeleton as ``(start, end)`` byte ranges, in file order."""
        out: list[tuple[int, int]] = []
        pos = 0
        for t in self.tensors:
            if t.offset > pos:
                out.append((pos, t.offset))
            pos = t.end
        if pos < self.size:
            out.append((pos, self.size))
        return out

    def skeleton_size(self) -> int:
        return sum(e - s for s, e in self.gaps())
