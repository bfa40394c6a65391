"""The merge library without git: three pointers → decisions → merged safetensors bytes."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load, save

from coral_git.core.pointer import Pointer
from coral_git.filter.clean import clean
from coral_git.git.repo import Repo
from coral_git.merge.model import METADATA, MergeSettings
from coral_git.merge.plan import plan_merge
from coral_git.merge.write import merged_pointer, write_merged
from coral_git.store.chunkstore import ChunkStore


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(tmp_path / "coral")


def state(seed: int = 0, n: int = 3, dtype: str = "float32") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {f"l{i}.weight": rng.standard_normal((40, 30)).astype(dtype) for i in range(n)}
    out["head.weight"] = rng.standard_normal((5, 30)).astype(dtype)
    out["steps"] = np.arange(4, dtype=np.int64)
    return out


def nudge(s: dict[str, np.ndarray], keys: list[str], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in s.items()}
    for k in keys:
        out[k] = (out[k] + rng.standard_normal(out[k].shape) * 0.01).astype(out[k].dtype)
    return out


def put(store: ChunkStore, s: dict[str, np.ndarray], meta: dict[str, str] | None = None, chunk_bytes: int = 1024) -> Pointer:
    return clean(save(s, metadata=meta), store, chunk_bytes=chunk_bytes).pointer


def merge(store: ChunkStore, b, o, t, strategy: str = "conflict", rules=(), params=None, resolutions=(), block=1 << 20):
    plan = plan_merge("m.safetensors", b, o, t, store, MergeSettings(strategy, tuple(rules), params or {}), tuple(resolutions))
    if not plan.clean:
        return plan, None, None
    buf = io.BytesIO()
    write_merged(plan, store, buf, block)
    data = buf.getvalue()
    return plan, load(data) if plan.ours.format == "safetensors" else None, data


def test_disjoint_changes_merge_exactly(store: ChunkStore) -> None:
    b = state()
    o = nudge(b, ["l0.weight"], 1)
    t = nudge(b, ["l2.weight", "head.weight"], 2)
    t["steps"] = t["steps"] + 1
    plan, m, _ = merge(store, put(store, b), put(store, o), put(store, t))
    assert plan.clean and plan.counts() == {"ours": 1, "theirs": 3, "both": 1}
    for k in b:
        assert np.array_equal(m[k], (o if k == "l0.weight" else t)[k]), k


def test_one_side_unchanged_takes_the_other_file(store: ChunkStore) -> None:
    b, t = put(store, state()), put(store, nudge(state(), ["l1.weight"], 3), {"x": "y"})
    plan, _, data = merge(store, b, b, t)
    assert plan.whole == "theirs"
    assert clean(data, store, chunk_bytes=1024).pointer == t


def test_both_changed_conflicts_by_default_and_strategies_resolve(store: ChunkStore) -> None:
    b = state()
    o, t = nudge(b, ["l0.weight", "l1.weight"], 1), nudge(b, ["l0.weight"], 2)
    pb, po, pt = put(store, b), put(store, o), put(store, t)
    plan, _, _ = merge(store, pb, po, pt)
    assert [c.name for c in plan.conflicts] == ["l0.weight"] and "changed on both sides" in plan.conflicts[0].reason
    f32 = np.float32
    want = {
        "average": f32(0.5) * o["l0.weight"] + f32(0.5) * t["l0.weight"],
        "weighted:0.25": f32(0.25) * o["l0.weight"] + f32(0.75) * t["l0.weight"],
        "task-arithmetic:0.5": b["l0.weight"] + f32(0.5) * ((o["l0.weight"] - b["l0.weight"]) + (t["l0.weight"] - b["l0.weight"])),
        "ours": o["l0.weight"],
        "theirs": t["l0.weight"],
    }
    for spec, expected in want.items():
        plan, m, _ = merge(store, pb, po, pt, spec, block=256)
        assert plan.clean, spec
        assert np.array_equal(m["l0.weight"], expected), spec
        assert np.array_equal(m["l1.weight"], o["l1.weight"])  # one-sided change, whatever the strategy


def test_ties_through_the_writer(store: ChunkStore) -> None:
    from test_merge_strategies import ties_reference

    b = state(n=1)
    o, t = nudge(b, ["l0.weight"], 1), nudge(b, ["l0.weight"], 2)
    plan, m, _ = merge(store, put(store, b), put(store, o), put(store, t), "ties", params={"density": 0.3, "lambda": 1.0}, block=512)
    assert plan.clean
    np.testing.assert_allclose(m["l0.weight"].ravel(), ties_reference(b["l0.weight"].ravel(), o["l0.weight"].ravel(), t["l0.weight"].ravel(), 0.3, 1.0), atol=1e-6)


def test_tensor_rules_first_match_wins(store: ChunkStore) -> None:
    b = state()
    o, t = nudge(b, ["l0.weight", "head.weight"], 1), nudge(b, ["l0.weight", "head.weight"], 2)
    plan, m, _ = merge(store, put(store, b), put(store, o), put(store, t), "conflict", rules=[("head.*", "theirs"), ("*", "average")])
    assert plan.clean
    assert np.array_equal(m["head.weight"], t["head.weight"])
    assert np.array_equal(m["l0.weight"], np.float32(0.5) * o["l0.weight"] + np.float32(0.5) * t["l0.weight"])


def test_integers_never_averaged_and_shapes_must_agree(store: ChunkStore) -> None:
    b = state()
    o, t = nudge(b, ["l0.weight"], 1), nudge(b, [], 2)
    o["steps"], t["steps"] = b["steps"] + 1, b["steps"] + 2
    t["l0.weight"] = np.zeros((40, 31), dtype=np.float32)
    plan, _, _ = merge(store, put(store, b), put(store, o), put(store, t), "average")
    reasons = {c.name: c.reason for c in plan.conflicts}
    assert set(reasons) == {"steps", "l0.weight"}
    assert "never combined" in reasons["steps"] and "F32[40,31]" in reasons["l0.weight"]
    assert "only --ours or --theirs apply" in reasons["steps"] and "only --ours or --theirs apply" in reasons["l0.weight"]
    plan, m, _ = merge(store, put(store, b), put(store, o), put(store, t), "average", resolutions=[("steps", "theirs"), ("l0.*", "ours")])
    assert plan.clean and np.array_equal(m["steps"], t["steps"]) and m["l0.weight"].shape == (40, 30)


def test_delete_add_and_delete_modify(store: ChunkStore) -> None:
    b = state()
    o = {k: v for k, v in b.items() if k != "l1.weight"}  # deleted in ours, unchanged in theirs
    o["extra.bias"] = np.ones(7, dtype=np.float32)  # added in ours
    t = nudge(b, ["head.weight"], 2)
    t["new.weight"] = np.full((2, 2), 3, dtype=np.float16)  # added in theirs
    plan, m, _ = merge(store, put(store, b), put(store, o), put(store, t))
    assert plan.clean
    assert set(m) == {"l0.weight", "l2.weight", "head.weight", "steps", "extra.bias", "new.weight"}
    assert np.array_equal(m["new.weight"], t["new.weight"]) and np.array_equal(m["head.weight"], t["head.weight"])
    t2 = nudge(b, ["l1.weight"], 3)  # modified in theirs, deleted in ours
    plan, _, _ = merge(store, put(store, b), put(store, o), put(store, t2))
    assert [(c.name, c.reason) for c in plan.conflicts] == [("l1.weight", "deleted in ours, modified in theirs")]
    plan, m, _ = merge(store, put(store, b), put(store, o), put(store, t2), "theirs")
    assert np.array_equal(m["l1.weight"], t2["l1.weight"])
    plan, m, _ = merge(store, put(store, b), put(store, o), put(store, t2), "ours")
    assert "l1.weight" not in m


def test_bf16_average_matches_torch(store: ChunkStore) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    raw = [rng.integers(0x3C00, 0x4100, size=(64, 33), dtype=np.uint16) for _ in range(3)]

    # safetensors.numpy has no bf16: write the files by hand
    def bf16_file(r: np.ndarray) -> bytes:
        header = json.dumps({"w": {"dtype": "BF16", "shape": list(r.shape), "data_offsets": [0, r.nbytes]}}).encode()
        header += b" " * (-len(header) % 8)
        return struct.pack("<Q", len(header)) + header + r.astype("<u2").tobytes()

    sides = [clean(bf16_file(r), store, chunk_bytes=1024).pointer for r in raw]
    assert sides[0].tensors[0].dtype == "BF16"
    plan = plan_merge("m", *sides, store, MergeSettings("average"))
    buf = io.BytesIO()
    write_merged(plan, store, buf, 300)
    from safetensors.torch import load as tload

    got = tload(buf.getvalue())["w"]
    o, t = (torch.from_numpy(r.astype(np.int16)).view(torch.bfloat16).float() for r in raw[1:])
    want = (0.5 * o + 0.5 * t).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got.view(torch.int16), want.view(torch.int16))


def test_metadata_merges_key_by_key_and_conflicts(store: ChunkStore) -> None:
    s = state()
    b = put(store, s, {"step": "1", "lr": "0.1"})
    o = put(store, nudge(s, ["l0.weight"], 1), {"step": "1", "lr": "0.2"})
    t = put(store, s, {"step": "2", "lr": "0.1", "note": "x"})
    plan, _, data = merge(store, b, o, t)
    assert plan.clean
    (n,) = struct.unpack_from("<Q", data)
    assert json.loads(data[8 : 8 + n])[METADATA] == {"step": "2", "lr": "0.2", "note": "x"}
    o2 = put(store, s, {"step": "3", "lr": "0.1"})  # metadata-only change on both sides
    plan, _, _ = merge(store, b, o2, t)
    assert [c.name for c in plan.conflicts] == [METADATA] and "'step'" in plan.conflicts[0].reason
    plan, _, data = merge(store, b, o2, t, resolutions=[(METADATA, "theirs")])
    (n,) = struct.unpack_from("<Q", data)
    assert plan.clean and json.loads(data[8 : 8 + n])[METADATA] == {"step": "2", "lr": "0.1", "note": "x"}
    plan, _, _ = merge(store, b, o2, t, "average")
    assert [c.name for c in plan.conflicts] == [METADATA]  # metadata is never averaged


def test_unchanged_layout_keeps_ours_header_bytes(store: ChunkStore) -> None:
    b = state()
    o, t = nudge(b, ["l0.weight"], 1), nudge(b, ["l2.weight"], 2)
    po = put(store, o, {"k": "v"})
    _, _, data = merge(store, put(store, b, {"k": "v"}), po, put(store, t, {"k": "v"}))
    ours_bytes = save(o, metadata={"k": "v"})
    (n,) = struct.unpack_from("<Q", ours_bytes)
    assert data[: 8 + n] == ours_bytes[: 8 + n] and len(data) == len(ours_bytes)


def test_add_add_without_base(store: ChunkStore) -> None:
    o = {"a": np.ones(4, dtype=np.float32), "same": np.zeros(3, dtype=np.float32)}
    t = {"a": np.full(4, 3, dtype=np.float32), "same": np.zeros(3, dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
    plan, _, _ = merge(store, None, put(store, o), put(store, t))
    (reason,) = [c.reason for c in plan.conflicts]
    assert reason.startswith("added on both sides with different values (strategy: conflict); ")
    assert "no usable base for task-arithmetic/ties" in reason  # which strategies can still decide it
    plan, m, _ = merge(store, None, put(store, o), put(store, t), "average")
    assert np.array_equal(m["a"], np.full(4, 2, dtype=np.float32)) and set(m) == {"a", "same", "b"}
    plan, _, _ = merge(store, None, put(store, o), put(store, t), "task-arithmetic")
    assert "no common base" in plan.conflicts[0].reason


def test_different_chunk_sizes_compare_by_content(store: ChunkStore) -> None:
    b = state()
    o, t = nudge(b, ["l0.weight"], 1), nudge(b, ["l2.weight"], 2)
    plan, m, _ = merge(store, put(store, b, chunk_bytes=1024), put(store, o, chunk_bytes=4096), put(store, t, chunk_bytes=1024))
    assert plan.clean and np.array_equal(m["l0.weight"], o["l0.weight"]) and np.array_equal(m["l2.weight"], t["l2.weight"])


def test_opaque_files_merge_whole(store: ChunkStore) -> None:
    b, o, t = (clean(x, store, chunk_bytes=4096).pointer for x in (b"base", b"ours!", b"theirs"))
    plan, _, _ = merge(store, b, o, t)
    assert plan.conflicts[0].name == "" and "as a whole" in plan.conflicts[0].reason
    assert merge(store, b, o, t, "theirs")[0].whole == "theirs"
    assert merge(store, b, o, t, resolutions=[("*", "ours")])[0].whole == "ours"


def test_merged_pointer_is_the_clean_of_the_merged_bytes(tmp_path: Path) -> None:
    repo = Repo(tmp_path, tmp_path, None, {"coral.chunksize": "4096"})
    store = repo.store
    b = state()
    o, t = nudge(b, ["l0.weight"], 1), nudge(b, ["l0.weight", "head.weight"], 2)
    put4 = lambda s: put(store, s, chunk_bytes=4096)  # noqa: E731
    plan = plan_merge("m", put4(b), put4(o), put4(t), store, MergeSettings("average"))
    p = merged_pointer(plan, repo)
    buf = io.BytesIO()
    write_merged(plan, store, buf)
    assert p == clean(buf.getvalue(), store, chunk_bytes=4096).pointer
    got = io.BytesIO()
    from coral_git.filter.smudge import smudge

    smudge(p, store, got.write)
    assert got.getvalue() == buf.getvalue()
