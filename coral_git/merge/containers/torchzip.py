"""Merging torch zip checkpoints (``torch.save``): storages merge, the pickle must agree.

A torch checkpoint is a zip of ``data.pkl`` (the object structure: which tensors, their dtypes,
shapes and strides, plus any non-tensor state) and one stored record per tensor storage. The
merge keeps one side's skeleton (zip headers + pickle) byte for byte and replaces the payload of
each storage record with its merged bytes (same size), then fixes the CRC-32 fields of the
replaced records (local header, data descriptor, central directory). No pickle is executed.

The non-tensor part is ``data.pkl`` plus every other non-storage record: if it changed on one side
only, that side's skeleton is used; changed differently on both sides → a ``__pickle__``
conflict, resolvable with ours/theirs (the storages then follow that side's structure).
"""

from __future__ import annotations

import mmap
import struct
import tempfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from ...core.pointer import Pointer, TensorEntry
from ...errors import FormatError
from ...formats import torchzip
from ...store.chunkstore import ChunkStore
from ..model import Conflict, Container, Decision, MergePlan, MergeSettings
from ..pieces import read_skeleton, splice

PICKLE = "__pickle__"
_IGNORED = (".data/serialization_id",)  # an id torch derives from the record contents


@dataclass
class _TorchSide:
    pointer: Pointer
    skeleton: bytes
    structure: tuple  # (data.pkl bytes, ((record, crc, size), ...)) with the archive prefix removed
    crc_at: dict[int, list[tuple[int, int]]]  # span offset -> [(CRC field offset, old crc)]


def _sparse_view(p: Pointer, skel: bytes) -> tuple[BinaryIO, mmap.mmap]:
    """The file with tensor spans left as holes: a sparse temp file, mapped (tiny on disk and in RAM)."""
    f = tempfile.TemporaryFile(prefix="coral-merge-")
    f.truncate(p.size)
    pos = spos = 0
    for t in p.tensors:
        gap = t.offset - pos
        f.seek(pos)
        f.write(skel[spos : spos + gap])
        spos += gap
        pos = t.end
    f.seek(pos)
    f.write(skel[spos:])
    f.flush()
    return f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def _side(store: ChunkStore, path: str, p: Pointer) -> _TorchSide:
    skel = read_skeleton(store, p, path)
    f, m = _sparse_view(p, skel)
    try:
        mv = memoryview(m)
        try:
            return _describe(p, skel, mv)
        finally:
            mv.release()
    finally:
        m.close()
        f.close()


def _describe(p: Pointer, skel: bytes, mv: memoryview) -> _TorchSide:
    ents = torchzip.entries(mv)
    pkl = next((e for e in ents if e.name.endswith("/data.pkl") and e.name.count("/") == 1), None)
    if pkl is None:
        raise FormatError("no data.pkl in the torch checkpoint")
    prefix = pkl.name[: -len("data.pkl")]
    starts = {t.offset for t in p.tensors}
    count, cd_offset, _ = torchzip._directory(mv)
    central: dict[bytes, int] = {}
    pos = cd_offset
    for _ in range(count):
        nlen, xlen, clen = struct.unpack_from("<3H", mv, pos + 28)
        central[bytes(mv[pos + 46 : pos + 46 + nlen])] = pos + 16
        pos += 46 + nlen + xlen + clen
    records = []
    crc_at: dict[int, list[tuple[int, int]]] = {}
    pickle_bytes = b""
    for e in ents:
        nlen, xlen = struct.unpack_from("<2H", mv, e.header_offset + 26)
        start = e.header_offset + 30 + nlen + xlen
        if start in starts and e.method == 0:
            fields = [(central[e.raw_name], e.crc)]
            (local_crc,) = struct.unpack_from("<I", mv, e.header_offset + 14)
            if local_crc or not e.flags & 8:
                fields.append((e.header_offset + 14, e.crc))
            if e.flags & 8:  # data descriptor after the data, with or without its signature
                end = start + e.csize
                at = end + 4 if bytes(mv[end : end + 4]) == b"PK\x07\x08" else end
                fields.append((at, e.crc))
            crc_at[start] = fields
            continue
        name = e.name[len(prefix) :] if e.name.startswith(prefix) else e.name
        if e is pkl:
            raw = bytes(mv[start : start + e.csize])
            pickle_bytes = zlib.decompress(raw, -15) if e.method == 8 else raw
        elif name not in _IGNORED:
            records.append((name, e.crc, e.usize))
    return _TorchSide(p, skel, (pickle_bytes, tuple(sorted(records))), crc_at)


@dataclass
class _Extra:
    side: str  # whose skeleton the merged file keeps
    forced: bool  # chosen by a strategy despite a conflict: storages follow that side's structure


class TorchZipContainer(Container):
    """torch zip checkpoints: storages by the name of the first tensor viewing them."""

    format = torchzip.FORMAT

    def load(self, store: ChunkStore, path: str, base: Pointer | None, ours: Pointer, theirs: Pointer) -> dict[str, _TorchSide | None]:
        return {
            "base": _side(store, path, base) if base is not None else None,
            "ours": _side(store, path, ours),
            "theirs": _side(store, path, theirs),
        }

    def merge_extra(self, sides: object, settings: MergeSettings) -> tuple[object, list[Conflict]]:
        assert isinstance(sides, dict)
        b = sides["base"].structure if sides["base"] is not None else None
        o, t = sides["ours"].structure, sides["theirs"].structure
        if o == t or t == b:
            return _Extra("ours", False), []
        if o == b:
            return _Extra("theirs", False), []
        pick = settings.strategy_for(PICKLE).pick
        if pick:
            return _Extra(pick, True), []
        what = "the pickle (object structure, non-tensor state)" if o[0] != t[0] else "non-tensor records"
        return _Extra("ours", False), [Conflict(PICKLE, f"{what} changed differently on both sides")]

    def check(self, plan: MergePlan, sides: object, settings: MergeSettings, resolutions: tuple[tuple[str, str], ...]) -> None:
        assert isinstance(sides, dict) and isinstance(plan.extra, _Extra)
        keep: _TorchSide = sides[plan.extra.side]
        by_name = {d.name: d for d in plan.decisions}
        out: list[Decision] = []
        for e in keep.pointer.tensors:
            d = by_name.pop(e.name, None)
            if d is not None and _nbytes(d) == e.nbytes:
                out.append(d)
            elif plan.extra.forced:
                out.append(Decision(e.name, e, plan.extra.side))
            elif d is None:
                plan.conflicts.append(Conflict(e.name, f"deleted, but {plan.extra.side}' checkpoint structure still holds it"))
            else:
                plan.conflicts.append(Conflict(e.name, f"now {_nbytes(d)} bytes, but {plan.extra.side}' checkpoint structure holds {e.nbytes}"))
        for name in by_name:
            if not plan.extra.forced:
                plan.conflicts.append(Conflict(name, f"cannot be added to {plan.extra.side}' checkpoint structure; resolve with --ours or --theirs"))
        plan.decisions = out

    def write(self, plan: MergePlan, store: ChunkStore, out: BinaryIO, block_bytes: int) -> None:
        assert isinstance(plan.extra, _Extra)
        sides = self.load(store, plan.path, None, plan.ours if plan.extra.side == "ours" else plan.theirs, plan.theirs)
        keep: _TorchSide = sides["ours"]
        start = out.tell()
        crcs = splice(keep.skeleton, keep.pointer, plan.decisions, store, out, plan.path, block_bytes, crc=True)
        end = out.tell()
        for e, crc in zip(keep.pointer.tensors, crcs, strict=True):
            for at, old in keep.crc_at.get(e.offset, []):
                if crc != old:
                    out.seek(start + at)
                    out.write(struct.pack("<I", crc))
        out.seek(end)


def _nbytes(d: Decision) -> int:
    e: TensorEntry | None = d.take or d.ours
    assert e is not None
    return e.nbytes

