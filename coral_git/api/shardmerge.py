"""Merging a sharded checkpoint by tensor name, for merges where the two sides sharded differently.

git merges files, so when one side re-sharded (``-of-00003`` files deleted, ``-of-00002`` added) and
the other changed a tensor in an old shard, git stops on a modify/delete conflict and the other
side's change is in no file of the result. Read as one model per side (``api.sharded``), the merge
is per tensor name: taken from the side that changed it, a conflict when both changed it
differently (no tensor is decoded: equal chunk ids are equal bytes). The result is written in *our*
sharding: our index's shard files, tensors new on their side in our last shard.
"""

from __future__ import annotations

import json
import os
import posixpath
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..diffs.tensordiff import Side, View, read_view, view_segments, views
from ..errors import UsageError
from ..formats.shardindex import weight_map
from ..git.repo import Repo, git
from ..git.versions import blob_at
from . import sharded
from .model import RepoLike, _relpath, _repo, _side


@dataclass
class ShardMerge:
    """What merging one sharded model did (or would do, while conflicts remain)."""

    index: str
    conflicts: list[str] = field(default_factory=list)  # tensors both sides changed differently
    theirs: list[str] = field(default_factory=list)  # tensors taken from their side
    removed: list[str] = field(default_factory=list)  # tensors deleted by a side
    written: list[str] = field(default_factory=list)  # shard files written and staged
    dropped: list[str] = field(default_factory=list)  # shard files removed (not in our index)


def _sig(v: View | None) -> Any:
    return None if v is None else v.signature()


def merge_sharded(index: str | os.PathLike[str], *, repo: RepoLike = None, write: bool = True) -> ShardMerge:
    """Merge the model ``index`` names between HEAD and MERGE_HEAD by tensor name (see the module)."""
    r = _repo(repo)
    rel = _relpath(r, index, repo)
    cwd = r.worktree or r.git_dir
    if r.worktree is None or not git("rev-parse", "-q", "--verify", "MERGE_HEAD", cwd=cwd, check=False):
        raise UsageError("no merge in progress: run this after 'git merge' stopped on the shards of " + rel)
    base = git("merge-base", "HEAD", "MERGE_HEAD", cwd=cwd, check=False) or None
    res = ShardMerge(rel)
    with ExitStack() as stack:
        def model(spec: str | None) -> tuple[Side, list[str]]:
            if spec is None:
                return Side(None, None), []
            got = sharded.model_side(r, stack, spec, rel, lambda st, p, blob: _side(r, st, p, blob))
            if got is None:
                raise UsageError(f"{rel} at {spec} is not a shard index of readable shards: merge its files one by one")
            return got

        (b, _), (o, opaths), (t, tpaths) = model(base), model("HEAD"), model("MERGE_HEAD")
        if any(s.pointer is not None and not s.pointer.format.startswith("safetensors ") for s in (b, o, t)):
            raise UsageError(f"{rel}: only safetensors shards are merged by tensor name; merge its files one by one")
        vb, vo, vt = ({} if s.pointer is None else views(s.pointer, s.source) for s in (b, o, t))
        picked: dict[str, tuple[View, Side]] = {}
        for name in [*vo, *(n for n in vt if n not in vo), *(n for n in vb if n not in vo and n not in vt)]:
            sb, so, st = _sig(vb.get(name)), _sig(vo.get(name)), _sig(vt.get(name))
            if so == st or st == sb:
                side, v = o, vo.get(name)
            elif so == sb:
                side, v = t, vt.get(name)
                res.theirs.append(name)
            else:
                res.conflicts.append(name)
                continue
            if v is None:
                res.removed.append(name)
            else:
                picked[name] = (v, side)
        if res.conflicts or not write:
            return res
        _write(r, rel, picked, res, opaths, tpaths)
    return res


def _write(r: Repo, rel: str, picked: dict[str, tuple[View, Side]], res: ShardMerge, opaths: list[str], tpaths: list[str]) -> None:
    """Write our shard files with the picked tensors, our index with the merged map; stage them."""
    assert r.worktree is not None
    blob = blob_at(r, "HEAD", rel)
    doc = json.loads(r.pygit[blob].data) if blob else {"weight_map": {}}
    wm = weight_map(json.dumps(doc).encode()) or {}
    shards = list(dict.fromkeys(wm.values())) or [posixpath.basename(opaths[-1] if opaths else "model.safetensors")]
    new_map = {n: wm.get(n, shards[-1]) for n in picked}
    doc["weight_map"] = new_map
    if isinstance(doc.get("metadata"), dict) and "total_size" in doc["metadata"]:
        doc["metadata"]["total_size"] = sum(v.nbytes for v, _ in picked.values())
    d = posixpath.dirname(rel)
    for shard in shards:
        names = [n for n, s in new_map.items() if s == shard]
        path = posixpath.join(d, shard)
        _write_safetensors(r.worktree / path, [(n, *picked[n]) for n in names])
        res.written.append(path)
    (r.worktree / rel).write_text(json.dumps(doc, indent=2) + "\n")
    keep = set(res.written)
    res.dropped = sorted(p for p in set(opaths) | set(tpaths) if p not in keep)
    cwd = r.worktree
    if res.dropped:
        git("rm", "-q", "--cached", "--ignore-unmatch", "--", *res.dropped, cwd=cwd)
        for p in res.dropped:
            (r.worktree / p).unlink(missing_ok=True)
    git("add", "--", rel, *res.written, cwd=cwd)


def _write_safetensors(path: Any, tensors: list[tuple[str, View, Side]]) -> None:
    """A safetensors file of ``tensors`` in order (each decoded one at a time, never all at once)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    at = 0
    for name, v, _ in tensors:
        header[name] = {"dtype": v.dtype, "shape": list(v.shape), "data_offsets": [at, at + v.nbytes]}
        at += v.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.coral-merge"
    with open(tmp, "wb") as f, ThreadPoolExecutor(max_workers=2) as pool:
        f.write(len(text).to_bytes(8, "little") + text)
        for _name, v, side in tensors:
            assert side.source is not None
            if v.strides is None:  # chunk by chunk: memory stays bounded by the chunk size
                for seg in view_segments(v, side.source, pool, 4):
                    f.write(np.ascontiguousarray(seg).data)
            else:
                f.write(read_view(v, side.source, pool).data)
    os.replace(tmp, path)
