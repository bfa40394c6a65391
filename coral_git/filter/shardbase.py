"""Delta bases for the shards of a sharded checkpoint: a tensor that moved to another shard file.

The base of a tensor is looked up by path (the same file in the index or HEAD). When a checkpoint is
re-sharded, a tensor's previous version sits in *another* shard file, often one whose name no longer
exists (``model-00002-of-00003`` → ``model-00001-of-00002``). Here the previous version is found
through the shard indexes (``*.index.json``) beside the file in the index and in HEAD: every shard
they name is read (pointers only) and its tensors become bases by name. The recent-tensor table
is still the last resort; this lookup does not depend on what was stored last on this machine.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

from ..core import pointer as ptr
from ..formats.shardindex import MAX_INDEX_BYTES, is_index_path, shard_paths, weight_map
from ..git.repo import Repo
from ..git.versions import blob_at, listdir_at, read_at

_SPECS = ("", "HEAD")  # the index first: a shard staged earlier is the newer version


class ShardBases:
    """Previous tensors of the shard indexes beside a path, per directory, for one filter session."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self._by_dir: dict[str, dict[str, tuple[ptr.TensorEntry, int]]] = {}

    def tensors(self, d: str) -> dict[str, tuple[ptr.TensorEntry, int]]:
        """``name → (entry, chunk size)`` over the shards named by the indexes in ``d``."""
        if d not in self._by_dir:
            self._by_dir[d] = self._read(d)
        return self._by_dir[d]

    def _read(self, d: str) -> dict[str, tuple[ptr.TensorEntry, int]]:
        r = self.repo
        out: dict[str, tuple[ptr.TensorEntry, int]] = {}
        # index files are looked for in HEAD's tree and the work tree (listing git's index would
        # walk every entry of the repository), then read from the index and HEAD
        names = sorted({n for spec in (None, "HEAD") for n in listdir_at(r, spec, d) if is_index_path(n)})
        for spec in _SPECS:
            for name in names:
                ip = posixpath.join(d, name)
                blob = blob_at(r, spec, ip)
                data = read_at(r, blob, ip, MAX_INDEX_BYTES) if blob is not None else None
                wm = weight_map(data) if data is not None else None
                for shard in shard_paths(ip, wm) if wm else ():
                    p = self._pointer(spec, shard)
                    for t in p.tensors if p is not None else ():
                        out.setdefault(t.name, (t, p.chunk_bytes))  # type: ignore[union-attr]
        return out

    def _pointer(self, spec: str, path: str) -> ptr.Pointer | None:
        blob = blob_at(self.repo, spec, path)
        if blob is None:
            return None
        data = read_at(self.repo, blob, path, ptr.MAX_POINTER)
        return ptr.try_parse(data) if data is not None else None

    def base(self, path: str, own: ptr.Pointer | None, chunk_bytes: int) -> ptr.Pointer | None:
        """``own`` (the previous version by path) plus, by name, the tensors it lacks from old shards."""
        found = self.tensors(posixpath.dirname(path))
        if not found:
            return own
        have = own.by_name() if own is not None and own.chunk_bytes == chunk_bytes else {}
        extra = tuple(t for name, (t, cb) in found.items() if cb == chunk_bytes and name not in have)
        if not extra:
            return own
        if own is None or own.chunk_bytes != chunk_bytes:
            return ptr.Pointer(0, "shards", "", chunk_bytes, 0, (), extra)  # bases only, never written
        return replace(own, tensors=own.tensors + extra)
