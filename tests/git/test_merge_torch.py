"""Merging torch zip checkpoints: storages merge in place, the zip stays valid, the model runs."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from helpers import coral, git

from coral_git.core.pointer import Pointer
from coral_git.filter.clean import clean
from coral_git.merge.model import MergeSettings
from coral_git.merge.plan import plan_merge
from coral_git.merge.write import write_merged
from coral_git.store.chunkstore import ChunkStore

torch = pytest.importorskip("torch")


def model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def nudge(sd: dict, keys: list[str], seed: int) -> dict:
    """A fine-tune of ``keys`` (a plain dict, like the base: the pickles differ only in values)."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v.clone() for k, v in sd.items()}
    for k in keys:
        out[k] = out[k] + torch.randn(out[k].shape, generator=g) * 0.05
    return out


def saved(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def put(store: ChunkStore, obj: Any) -> Pointer:
    return clean(saved(obj), store, chunk_bytes=4096).pointer


def merged_bytes(store: ChunkStore, b: Any, o: Any, t: Any, strategy: str = "conflict", resolutions=()) -> tuple[Any, bytes | None]:
    plan = plan_merge("m.pt", put(store, b), put(store, o), put(store, t), store, MergeSettings(strategy), tuple(resolutions))
    if not plan.clean:
        return plan, None
    buf = io.BytesIO()
    write_merged(plan, store, buf)
    return plan, buf.getvalue()


def load(data: bytes) -> Any:
    assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None  # every CRC-32 matches
    return torch.load(io.BytesIO(data), weights_only=True)


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(tmp_path / "coral")


def test_state_dicts_merge_per_storage(store: ChunkStore) -> None:
    base = dict(model().state_dict())
    o, t = nudge(base, ["0.weight", "2.bias"], 1), nudge(base, ["0.weight", "0.bias"], 2)
    plan, _ = merged_bytes(store, base, o, t)
    assert [c.name for c in plan.conflicts] == ["0.weight"]
    plan, data = merged_bytes(store, base, o, t, "average")
    sd = load(data)
    assert torch.equal(sd["0.weight"], 0.5 * o["0.weight"] + 0.5 * t["0.weight"])
    assert torch.equal(sd["2.bias"], o["2.bias"]) and torch.equal(sd["0.bias"], t["0.bias"])
    assert torch.equal(sd["2.weight"], base["2.weight"])


def test_structure_change_on_one_side_uses_that_skeleton(store: ChunkStore) -> None:
    base = {"model": dict(model().state_dict()), "epoch": 1}
    o = {"model": nudge(base["model"], ["2.weight"], 1), "epoch": 1}
    t = {"model": dict(base["model"]), "epoch": 2, "ema": torch.ones(3)}  # theirs adds state and a tensor
    plan, data = merged_bytes(store, base, o, t)
    assert plan.clean
    ck = load(data)
    assert ck["epoch"] == 2 and torch.equal(ck["ema"], torch.ones(3))
    assert torch.equal(ck["model"]["2.weight"], o["model"]["2.weight"])


def test_pickle_changed_on_both_sides_conflicts_until_a_side_is_chosen(store: ChunkStore) -> None:
    base = {"model": dict(model().state_dict()), "epoch": 1}
    o = {"model": nudge(base["model"], ["0.weight"], 1), "epoch": 2}
    t = {"model": nudge(base["model"], ["2.bias"], 2), "epoch": 3, "extra": torch.zeros(2)}
    plan, _ = merged_bytes(store, base, o, t)
    assert [c.name for c in plan.conflicts] == ["__pickle__"]
    plan, data = merged_bytes(store, base, o, t, resolutions=[("__pickle__", "theirs")])
    ck = load(data)
    assert ck["epoch"] == 3 and set(ck) == {"model", "epoch", "extra"}
    assert torch.equal(ck["model"]["0.weight"], o["model"]["0.weight"])  # ours' tensor change still merged in
    assert torch.equal(ck["model"]["2.bias"], t["model"]["2.bias"])


def test_bf16_and_int_storages(store: ChunkStore) -> None:
    base = {"w": torch.randn(64, 8).to(torch.bfloat16), "n": torch.arange(5)}
    o = {"w": (base["w"].float() + 0.1).to(torch.bfloat16), "n": base["n"] + 1}
    t = {"w": (base["w"].float() * 1.5).to(torch.bfloat16), "n": base["n"] + 2}
    plan, _ = merged_bytes(store, base, o, t, "average")
    assert [c.name for c in plan.conflicts] == ["n"] and "never combined" in plan.conflicts[0].reason
    plan, data = merged_bytes(store, base, o, t, "average", resolutions=[("n", "theirs")])
    ck = load(data)
    want = (0.5 * o["w"].float() + 0.5 * t["w"].float()).to(torch.bfloat16)
    assert ck["w"].dtype == torch.bfloat16 and torch.equal(ck["w"], want) and torch.equal(ck["n"], t["n"])


def test_git_merge_of_torch_fine_tunes_runs_forward(repo: Path) -> None:
    """Two fine-tunes of disjoint layers merge cleanly; an overlapping one averages; the model runs."""
    net = model()
    base = dict(net.state_dict())
    torch.save(base, repo / "model.pt")
    git(repo, "add", "model.pt")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "feature")
    theirs = nudge(base, ["2.weight", "2.bias", "0.bias"], 2)
    torch.save(theirs, repo / "model.pt")
    git(repo, "commit", "-qam", "tune the head")
    git(repo, "checkout", "-q", "main")
    ours = nudge(base, ["0.weight", "0.bias"], 1)
    torch.save(ours, repo / "model.pt")
    git(repo, "commit", "-qam", "tune the first layer")
    git(repo, "merge", "feature", check=False)
    assert "0.bias" in coral(repo, "conflicts").stdout.decode()
    coral(repo, "resolve", "model.pt", "--strategy", "average")
    git(repo, "commit", "-qm", "merge")
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    merged = torch.load(repo / "model.pt", weights_only=True)
    expected = dict(ours)
    expected.update({k: theirs[k] for k in ("2.weight", "2.bias")})
    expected["0.bias"] = 0.5 * ours["0.bias"] + 0.5 * theirs["0.bias"]
    for k in base:
        assert torch.equal(merged[k], expected[k]), k
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(9))
    net.load_state_dict(merged)
    ref = model()
    ref.load_state_dict(expected)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))
