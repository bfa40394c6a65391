"""The layout of a model file: tensor payload spans plus everything else (the skeleton).

A reader never copies tensor data: it only says where each tensor's bytes lie. Every byte of the
file that is not inside a span belongs to the skeleton, so ``skeleton + spans`` always rebuilds the
file exactly, whatever the format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..dtypes import DTYPE_BITS, itemsize  # noqa: F401  (re-exported: readers name dtypes through the layout)


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
