"""The pointer: the small text git stores in place of a model file.

    coral-pointer 1
    file <size> <format> <xxh3-128 of the whole file>
    chunking <target chunk bytes> | cdc-<min>-<avg>-<max>
    skeleton <nbytes> <chunk ids, comma-separated, or ->
    tensor <name> <dtype> <shape> <offset> <nbytes> <chunk ids or ->
    ...

Tensor lines are in file order (by offset). Names are percent-encoded so that a line never holds a
space, a newline or a non-ASCII byte. See docs/format.md for the exact rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .errors import PointerError

MAGIC = "coral-pointer 1\n"
MAX_POINTER = 64 * 1024 * 1024
_SAFE = "!\"#$&'()*+,-./:;<=>?@[\\]^_`{|}~"
_ID = re.compile(r"[0-9a-f]{32}\Z")
_INT = re.compile(r"(0|[1-9][0-9]*)\Z")


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One tensor (or torch storage) of a pointer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int
    chunks: tuple[str, ...]

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


@dataclass(frozen=True)
class Pointer:
    """A parsed pointer: enough to rebuild the file exactly from the store."""

    size: int
    format: str
    file_id: str
    chunk_bytes: int
    skeleton_nbytes: int
    skeleton: tuple[str, ...]
    tensors: tuple[TensorEntry, ...]
    # content-defined skeleton cuts ``(min, avg, max)`` (opaque files only); None: fixed ``chunk_bytes``
    cdc: tuple[int, int, int] | None = None

    def render(self) -> str:
        """The canonical text of this pointer."""
        lines = [
            MAGIC.rstrip("\n"),
            f"file {self.size} {self.format} {self.file_id}",
            f"chunking {_chunking(self)}",
            f"skeleton {self.skeleton_nbytes} {_ids(self.skeleton)}",
        ]
        for t in self.tensors:
            shape = "[" + ",".join(map(str, t.shape)) + "]"
            lines.append(f"tensor {quote(t.name, safe=_SAFE)} {t.dtype} {shape} {t.offset} {t.nbytes} {_ids(t.chunks)}")
        return "\n".join(lines) + "\n"

    def encode(self) -> bytes:
        return self.render().encode("ascii")

    def chunk_ids(self) -> set[str]:
        """Every chunk id the pointer names."""
        out = set(self.skeleton)
        for t in self.tensors:
            out.update(t.chunks)
        return out

    def by_name(self) -> dict[str, TensorEntry]:
        return {t.name: t for t in self.tensors}


def _chunking(p: Pointer) -> str:
    """``<chunk bytes>`` (fixed cuts), or ``cdc-<min>-<avg>-<max>`` for content-defined skeleton cuts."""
    return str(p.chunk_bytes) if p.cdc is None else "cdc-" + "-".join(map(str, p.cdc))


def _parse_chunking(tok: str) -> tuple[int, tuple[int, int, int] | None]:
    """``(chunk_bytes, cdc)`` from the chunking token; a CDC pointer's chunk_bytes is its average size."""
    if not tok.startswith("cdc-"):
        return _int(tok), None
    parts = tok[4:].split("-")
    if len(parts) != 3:
        raise PointerError(f"malformed chunking {tok[:40]!r}")
    lo, avg, hi = (_int(x) for x in parts)
    if not 0 < lo <= avg <= hi:
        raise PointerError(f"chunking sizes out of order: {tok[:40]!r}")
    return avg, (lo, avg, hi)


def _ids(ids: tuple[str, ...]) -> str:
    return ",".join(ids) if ids else "-"


def looks_like_pointer(data: bytes) -> bool:
    """Cheap first test: the magic line starts the text."""
    return data.startswith(MAGIC.encode())


def parse(data: bytes) -> Pointer:
    """Parse pointer text; raise PointerError unless it is valid and canonical."""
    if len(data) > MAX_POINTER or not looks_like_pointer(data):
        raise PointerError("not a coral pointer")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PointerError("pointer is not ASCII") from None
    if not text.endswith("\n"):
        raise PointerError("pointer does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 4:
        raise PointerError("pointer is truncated")
    f = lines[1].split(" ")
    c = lines[2].split(" ")
    s = lines[3].split(" ")
    if len(f) != 4 or f[0] != "file" or len(c) != 2 or c[0] != "chunking" or len(s) != 3 or s[0] != "skeleton":
        raise PointerError("pointer header lines are malformed")
    if not _ID.match(f[3]):
        raise PointerError("pointer file id is malformed")
    tensors = tuple(_tensor(line) for line in lines[4:])
    chunk_bytes, cdc = _parse_chunking(c[1])
    p = Pointer(_int(f[1]), f[2], f[3], chunk_bytes, _int(s[1]), _split_ids(s[2]), tensors, cdc=cdc)
    if cdc is not None and tensors:
        raise PointerError("content-defined chunking is only used for files without tensors")
    pos = 0
    for t in tensors:
        if t.offset < pos:
            raise PointerError(f"tensor {t.name!r} overlaps another or is out of order")
        pos = t.end
    if pos > p.size or p.skeleton_nbytes != p.size - sum(t.nbytes for t in tensors):
        raise PointerError("pointer sizes do not add up")
    if p.render() != text:
        raise PointerError("pointer is not in canonical form")
    return p


def _tensor(line: str) -> TensorEntry:
    parts = line.split(" ")
    if len(parts) != 7 or parts[0] != "tensor":
        raise PointerError(f"malformed tensor line: {line[:80]!r}")
    _, name, dtype, shape, offset, nbytes, ids = parts
    if not (shape.startswith("[") and shape.endswith("]")):
        raise PointerError(f"malformed shape {shape!r}")
    dims = tuple(_int(d) for d in shape[1:-1].split(",")) if shape != "[]" else ()
    try:
        text = unquote(name, errors="strict")
    except UnicodeDecodeError:
        raise PointerError(f"tensor name {name[:80]!r} is not percent-encoded UTF-8") from None
    return TensorEntry(text, dtype, dims, _int(offset), _int(nbytes), _split_ids(ids))


def _int(s: str) -> int:
    if not _INT.match(s) or len(s) > 40:
        raise PointerError(f"malformed number {s[:40]!r}")
    return int(s)


def _split_ids(s: str) -> tuple[str, ...]:
    if s == "-":
        return ()
    ids = tuple(s.split(","))
    if not all(_ID.match(i) for i in ids):
        raise PointerError("malformed chunk id")
    return ids
