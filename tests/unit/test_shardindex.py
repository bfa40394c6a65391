"""Shard index parsing (data only, hostile input refused) and joining shard pointers into one model."""

from __future__ import annotations

import json

from coral_git.core.pointer import Pointer, TensorEntry
from coral_git.diffs.sharded import join
from coral_git.diffs.tensordiff import Side
from coral_git.formats.shardindex import is_index_path, shard_paths, weight_map


def test_weight_map_accepts_hf_index_and_refuses_the_rest() -> None:
    good = {"metadata": {"total_size": 8}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "sub/x.safetensors"}}
    assert weight_map(json.dumps(good).encode()) == good["weight_map"]
    for bad in (b"", b"\xff\xfe", b"[1,2]", b"{}", b'{"weight_map": {}}', b'{"weight_map": []}',
                b'{"weight_map": {"a": 3}}', b'{"weight_map": {"a": "../outside.safetensors"}}',
                b'{"weight_map": {"a": "/etc/passwd"}}', b'{"weight_map": {"a": "x\\\\y"}}', b'{"weight_map": {"a": ""}}'):  # fmt: skip
        assert weight_map(bad) is None, bad
    assert is_index_path("m/model.safetensors.index.json") and not is_index_path("model.safetensors")


def test_shard_paths_are_relative_to_the_index_and_deduplicated() -> None:
    wm = {"a": "s2.safetensors", "b": "s1.safetensors", "c": "s2.safetensors", "d": "./s1.safetensors"}
    assert shard_paths("ckpt/model.safetensors.index.json", wm) == ["ckpt/s2.safetensors", "ckpt/s1.safetensors"]
    assert shard_paths("model.safetensors.index.json", wm) == ["s2.safetensors", "s1.safetensors"]


def _ptr(fmt: str, *tensors: TensorEntry, chunk: int = 1 << 20) -> Pointer:
    return Pointer(100, fmt, "f" * 32, chunk, 8, ("0" * 32,), tensors)


def test_join_takes_the_shard_the_map_names_and_refuses_mixed_shards() -> None:
    a1 = TensorEntry("a", "F32", (2,), 8, 8, ("1" * 32,))
    a2 = TensorEntry("a", "F32", (2,), 8, 8, ("2" * 32,))
    b = TensorEntry("b", "F32", (2,), 16, 8, ("3" * 32,))
    wm = {"a": "s2.safetensors", "b": "s1.safetensors"}
    side = join([("s1.safetensors", Side(_ptr("safetensors", a1, b), None)), ("s2.safetensors", Side(_ptr("safetensors", a2), None))], wm)
    assert side is not None and side.pointer is not None
    assert side.pointer.format == "safetensors ×2 shards"
    assert {t.name: t.chunks for t in side.pointer.tensors} == {"a": a2.chunks, "b": b.chunks}
    assert join([("s1", Side(_ptr("torch-zip", a1), None))], wm) is None  # entries are storages, not tensors
    assert join([("s1", Side(_ptr("safetensors", a1), None)), ("s2", Side(_ptr("safetensors", b, chunk=4096), None))], wm) is None
    assert join([("s1", Side(None, None))], wm) == Side(None, None)  # no shard on this side
