"""A sharded checkpoint as one model: the shard pointers an ``*.index.json`` names, joined by tensor name.

The joined pointer is never stored or rendered: it only feeds the views, diffs and tables that work
on one pointer. A tensor keeps its chunk ids whichever shard holds it (chunks are cut per tensor), so
a tensor that moved to another shard has the same signature and diffs as unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import xxhash

from ..core import pointer as ptr
from .tensordiff import BufferSource, Side, Source

# formats whose pointer entries are the named tensors (a torch zip's entries are storages)
_JOINABLE = {"safetensors", "gguf", "npy", "npz", "onnx"}


def joined_format(fmt: str, n: int) -> str:
    return f"{fmt} ×{n} shards"


def join(shards: Sequence[tuple[str, Side]], wm: dict[str, str]) -> Side | None:
    """One side made of ``(shard path, side)`` pairs, or None when the shards cannot be read as one.

    A tensor present in two shards is taken from the shard the weight map names (by file name).
    Missing shards (no pointer) are left out; shards of another chunk size or of a format whose
    entries are not tensors (torch zip, opaque) make the whole model unjoinable.
    """
    present = [(path, s) for path, s in shards if s.pointer is not None]
    if not present:
        return Side(None, None)
    ps = [s.pointer for _, s in present]
    assert all(p is not None for p in ps)
    fmts = {p.format for p in ps}  # type: ignore[union-attr]
    chunk = {p.chunk_bytes for p in ps}  # type: ignore[union-attr]
    if len(fmts) != 1 or not fmts <= _JOINABLE or len(chunk) != 1:
        return None
    owner = {name: shard.rsplit("/", 1)[-1] for name, shard in wm.items()}
    tensors: dict[str, ptr.TensorEntry] = {}
    for (path, _), p in zip(present, ps, strict=True):
        fname = path.rsplit("/", 1)[-1]
        for t in p.tensors:  # type: ignore[union-attr]
            if t.name not in tensors or owner.get(t.name) == fname:
                tensors[t.name] = t
    joined = ptr.Pointer(
        size=sum(p.size for p in ps),  # type: ignore[union-attr]
        format=joined_format(fmts.pop(), len(ps)),
        file_id=xxhash.xxh3_128_hexdigest("\0".join(p.file_id for p in ps).encode()),  # type: ignore[union-attr]
        chunk_bytes=chunk.pop(),
        skeleton_nbytes=sum(p.skeleton_nbytes for p in ps),  # type: ignore[union-attr]
        skeleton=tuple(c for p in ps for c in p.skeleton),  # type: ignore[union-attr]
        tensors=tuple(tensors.values()),
    )
    return Side(joined, _one_source([s.source for _, s in present]))


def _one_source(sources: list[Source | None]) -> Source | None:
    """The sources of the shards as one: the store itself when they all are, else the chunks of each."""
    distinct = {id(s): s for s in sources if s is not None}
    if len(distinct) <= 1:
        return next(iter(distinct.values()), None)
    index: dict = {}
    fallback = None
    verify = False
    for s in distinct.values():
        if isinstance(s, BufferSource):
            index.update(s.index)
            fallback = fallback or s.fallback
            verify = verify or s.verify
        else:
            fallback = s
    return BufferSource(index, fallback, verify=verify)
