"""The pointer: the small text git stores in place of a model file.

    coral-pointer 2
    file <size> <format> <xxh3-128 of the whole file>
    chunking <target chunk bytes> | cdc-<min>-<avg>-<max>
    skeleton <nbytes> <chunk ids, comma-separated, or ->
    tensor <name> <dtype> <shape> <offset> <nbytes> <chunk ids or ->
    ...
    check <xxh3-128 of every line above>

Tensor lines are in file order (by offset). Names are percent-encoded so that a line never holds a
space, a newline or a non-ASCII byte. The ``check`` line (version 2) makes a pointer all-or-nothing:
git's line-based machinery (``add -p``, ``restore -p``, a hand edit) cannot split, mix or truncate one
without the parser noticing at once. Version 1 pointers (no check line) stay readable. See
docs/format.md for the exact rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

import xxhash

from ..errors import PointerError

MAGIC = "coral-pointer "  # every version's first line starts with this: sniff by it, then parse
VERSION = 2  # what clean writes; version 1 (no check line) is still read
VERSIONS = (1, 2)
MAGIC_BYTES = MAGIC.encode()
EDITED = "it was edited, truncated or assembled from two versions (e.g. by a partial 'git add -p')"
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
    version: int = VERSION
    # content-defined skeleton cuts ``(min, avg, max)`` (opaque files only); None: fixed ``chunk_bytes``
    cdc: tuple[int, int, int] | None = None

    def render(self) -> str:
        """The canonical text of this pointer (with its check line from version 2 on)."""
        lines = [
            f"{MAGIC}{self.version}",
            f"file {self.size} {self.format} {self.file_id}",
            f"chunking {_chunking(self)}",
            f"skeleton {self.skeleton_nbytes} {_ids(self.skeleton)}",
        ]
        for t in self.tensors:
            shape = "[" + ",".join(map(str, t.shape)) + "]"
            lines.append(f"tensor {quote(t.name, safe=_SAFE)} {t.dtype} {shape} {t.offset} {t.nbytes} {_ids(t.chunks)}")
        body = "\n".join(lines) + "\n"
        return body if self.version == 1 else body + f"check {_check(body)}\n"

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


def _check(body: str) -> str:
    return xxhash.xxh3_128_hexdigest(body.encode("ascii"))


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


def looks_like_pointer(data: bytes | memoryview) -> bool:
    """Cheap first test: the magic starts the text (then :func:`parse` decides)."""
    return bytes(data[: len(MAGIC_BYTES)]) == MAGIC_BYTES


_TEXTCONV = re.compile(rb"coral [a-z0-9-]+ file: [0-9]+ tensors, ")


def is_textconv(head: bytes) -> bool:
    """True for the text ``git coral textconv`` prints. ``git blame FILE`` runs the work-tree file
    through textconv and then through clean; clean must hand such text back as it is, not store it."""
    return _TEXTCONV.match(head) is not None


def parse_or_none(data: bytes | memoryview) -> Pointer | None:
    """The pointer in ``data``, or None when ``data`` is not pointer text (a damaged pointer raises)."""
    if len(data) > MAX_POINTER or not looks_like_pointer(data):
        return None
    return parse(bytes(data))


def try_parse(data: bytes | memoryview) -> Pointer | None:
    """The pointer in ``data``, or None for anything else, damaged pointers included.

    For readers that only look for pointers (history scans, delta bases, diff sides); clean, smudge
    and merge inputs use :func:`parse_or_none` so that a damaged pointer is an error, not content.
    """
    try:
        return parse_or_none(data)
    except PointerError:
        return None


def parse(data: bytes) -> Pointer:
    """Parse pointer text; raise PointerError unless it is valid and canonical."""
    if len(data) > MAX_POINTER or not looks_like_pointer(data):
        raise PointerError("not a coral pointer")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise PointerError("pointer is not ASCII") from None
    if not text.endswith("\n"):
        raise PointerError(f"pointer does not end with a newline: {EDITED}")
    lines = text[:-1].split("\n")
    version = _version(lines[0])
    if version >= 2:
        last = lines.pop() if len(lines) > 1 else ""
        if not last.startswith("check "):
            raise PointerError(f"pointer has no check line: {EDITED}")
        body = text[: len(text) - len(last) - 1]
        if last[6:] != _check(body):
            raise PointerError(f"pointer check line does not match: {EDITED}")
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
    p = Pointer(_int(f[1]), f[2], f[3], chunk_bytes, _int(s[1]), _split_ids(s[2]), tensors, version, cdc)
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


def _version(first: str) -> int:
    v = first[len(MAGIC) :] if first.startswith(MAGIC) else ""
    if v not in {str(n) for n in VERSIONS}:
        raise PointerError(f"unknown pointer version {v[:10]!r} (this coral-git reads {VERSIONS}); upgrade coral-git")
    return int(v)


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
