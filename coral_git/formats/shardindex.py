"""Hugging Face shard indexes (``*.index.json``): which shard file holds each tensor.

A sharded checkpoint is ``model-0000k-of-0000N.safetensors`` files plus ``model.safetensors.index.json``
whose ``weight_map`` maps tensor name → shard file name (relative to the index's directory). The index
is read as JSON data only; anything that is not such a map (or names a shard outside the directory)
is not an index, and the files are treated one by one as before.
"""

from __future__ import annotations

import json
import posixpath

INDEX_SUFFIX = ".index.json"
MAX_INDEX_BYTES = 64 << 20  # a weight map of a few hundred thousand tensors is well under this


def is_index_path(path: str) -> bool:
    return path.endswith(INDEX_SUFFIX)


def weight_map(data: bytes) -> dict[str, str] | None:
    """``{tensor name: shard file name}`` from an index's bytes, or None if it is not a shard index."""
    if len(data) > MAX_INDEX_BYTES:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    wm = doc.get("weight_map") if isinstance(doc, dict) else None
    if not isinstance(wm, dict) or not wm:
        return None
    for name, shard in wm.items():
        if not isinstance(name, str) or not isinstance(shard, str) or not _safe_name(shard):
            return None
    return wm


def _safe_name(shard: str) -> bool:
    norm = posixpath.normpath(shard)
    return bool(shard) and not norm.startswith(("/", "../")) and norm not in (".", "..") and "\\" not in shard


def shard_paths(index_path: str, wm: dict[str, str]) -> list[str]:
    """The repository paths of the shards an index names, in order of first mention (deduplicated)."""
    base = posixpath.dirname(index_path)
    seen: dict[str, None] = {}
    for shard in wm.values():
        seen.setdefault(posixpath.normpath(posixpath.join(base, shard)), None)
    return list(seen)
