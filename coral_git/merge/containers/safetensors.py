"""Merging safetensors files: tensors by header key, ``__metadata__`` merged key by key."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

from ...core.pointer import Pointer
from ...store.chunkstore import ChunkStore
from ..model import METADATA, Conflict, Container, MergePlan, MergeSettings
from ..pieces import pieces, read_skeleton, splice


def merge_dicts(b: dict | None, o: dict | None, t: dict | None) -> tuple[dict | None, list[str]]:
    """Three-way merge of flat dicts key by key; returns the result and the conflicting keys.

    A key set differently on both sides conflicts and keeps our value in the result.
    """
    if o == t:
        return o, []
    if b == o:
        return t, []
    if b == t:
        return o, []
    b, o2, t2 = b or {}, o or {}, t or {}
    out: dict = {}
    bad: list[str] = []
    missing = object()
    for k in list(o2) + [k for k in t2 if k not in o2]:
        bv, ov, tv = b.get(k, missing), o2.get(k, missing), t2.get(k, missing)
        if ov == tv or bv == tv:
            v = ov
        elif bv == ov:
            v = tv
        else:
            bad.append(k)
            v = ov
        if v is not missing:
            out[k] = v
    return out, bad


@dataclass
class _StSide:
    header: dict
    raw_header: bytes


class SafetensorsContainer(Container):
    """safetensors: tensors by header key; ``__metadata__`` merged key by key."""

    format = "safetensors"

    def load(self, store: ChunkStore, path: str, base: Pointer | None, ours: Pointer, theirs: Pointer) -> dict[str, _StSide | None]:
        return {"base": self._side(store, path, base), "ours": self._side(store, path, ours), "theirs": self._side(store, path, theirs)}

    def _side(self, store: ChunkStore, path: str, p: Pointer | None) -> _StSide | None:
        if p is None:
            return None
        skel = read_skeleton(store, p, path)
        (n,) = struct.unpack_from("<Q", skel, 0)
        raw = skel[8 : 8 + n]
        return _StSide(json.loads(raw.decode("utf-8")), raw)

    def merge_extra(self, sides: object, settings: MergeSettings) -> tuple[object, list[Conflict]]:
        assert isinstance(sides, dict)
        metas = [s.header.get(METADATA) if s is not None else None for s in (sides["base"], sides["ours"], sides["theirs"])]
        merged, bad = merge_dicts(*metas)
        if not bad:
            return merged, []
        pick = settings.strategy_for(METADATA).pick
        if pick:
            o, t = metas[1] or {}, metas[2] or {}
            src = o if pick == "ours" else t
            merged = dict(merged or {})
            for k in bad:
                if k in src:
                    merged[k] = src[k]
                else:
                    merged.pop(k, None)
            return merged, []
        o, t = metas[1] or {}, metas[2] or {}
        keys = ", ".join(f"{k!r} (ours {o.get(k)!r}, theirs {t.get(k)!r})" for k in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return merged, [Conflict(METADATA, f"metadata changed differently on both sides: {keys}{more}")]

    def write(self, plan: MergePlan, store: ChunkStore, out: BinaryIO, block_bytes: int) -> None:
        ours = plan.ours
        meta = plan.extra
        by_name = {d.name: d for d in plan.decisions}
        o_entries = ours.tensors
        same_layout = [(t.name, t.dtype, t.shape) for t in o_entries] == [(d.name, d.dtype, d.shape) for d in plan.decisions]
        skel = read_skeleton(store, ours, plan.path)
        (n,) = struct.unpack_from("<Q", skel, 0)
        o_header = json.loads(skel[8 : 8 + n].decode("utf-8"))
        if same_layout and meta == o_header.get(METADATA):
            splice(skel, ours, [by_name[t.name] for t in o_entries], store, out, plan.path, block_bytes)
            return
        # rebuild the header: ours' key order, then new tensors; data in ours' file order, then new ones
        header: dict = {}
        order = [d.name for d in plan.decisions]
        offset = 0
        spans: dict[str, list[int]] = {}
        for name in order:
            d = by_name[name]
            nb = (d.take.nbytes if d.take is not None else d.ours.nbytes)  # type: ignore[union-attr]
            spans[name] = [offset, offset + nb]
            offset += nb
        keys = [k for k in o_header if k == METADATA or k in by_name] + [k for k in order if k not in o_header]
        if meta and METADATA not in keys:
            keys.insert(0, METADATA)
        for k in keys:
            if k == METADATA:
                if meta:
                    header[k] = meta
                continue
            d = by_name[k]
            header[k] = {"dtype": d.dtype, "shape": list(d.shape), "data_offsets": spans[k]}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * (-(8 + len(text)) % 8)
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for name in order:
            for piece in pieces(store, by_name[name], plan.path, block_bytes):
                out.write(memoryview(piece))
