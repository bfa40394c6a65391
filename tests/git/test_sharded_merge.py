"""Merging sharded checkpoints through real git: same sharding on both sides merges tensor by tensor
(git's per-file merge + the coral driver); when one side re-sharded, ``git coral merge-shards`` merges
by tensor name and writes our sharding, or names the tensors both sides changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from helpers import coral, git
from test_sharded import INDEX, STATE, commit_all, write_sharded

import coral_git


def branch_edit(repo: Path, branch: str, edits: dict[str, float], shards: int) -> dict[str, np.ndarray]:
    """On a new branch from main: scale the first rows of some tensors, save in ``shards`` shards, commit."""
    git(repo, "checkout", "-qb", branch, "main")
    state = {k: v.copy() for k, v in STATE.items()}
    for name, f in edits.items():
        state[name][:4] *= f
    write_sharded(repo, state, shards)
    commit_all(repo, branch)
    return state


def model(repo: Path, rev: str) -> dict[str, np.ndarray]:
    with coral_git.open(INDEX, rev=rev, repo=repo) as m:
        return {n: m[n] for n in m}


def setup(repo: Path) -> None:
    write_sharded(repo, STATE, 3)
    commit_all(repo, "3 shards")


def test_same_sharding_merges_tensor_by_tensor(repo: Path) -> None:
    setup(repo)
    a = branch_edit(repo, "a", {"layers.2.weight": 1.5}, 3)  # both tensors live in shard 2 of 3
    b = branch_edit(repo, "b", {"layers.3.weight": 0.5}, 3)
    git(repo, "checkout", "-q", "a")
    git(repo, "merge", "-q", "--no-edit", "b")
    got = model(repo, "HEAD")
    assert np.array_equal(got["layers.2.weight"], a["layers.2.weight"])
    assert np.array_equal(got["layers.3.weight"], b["layers.3.weight"])
    assert all(np.array_equal(got[n], STATE[n]) for n in STATE if n not in ("layers.2.weight", "layers.3.weight"))


def test_resharded_side_merges_by_tensor_name(repo: Path) -> None:
    setup(repo)
    branch_edit(repo, "reshard", {}, 2)
    b = branch_edit(repo, "tune", {"layers.4.weight": 1.25, "head.weight": 0.75}, 3)  # both in shard 3 of 3
    git(repo, "checkout", "-q", "reshard")
    proc = git(repo, "merge", "--no-edit", "tune", check=False)
    assert "CONFLICT" in proc  # git: modify/delete on model-00003-of-00003
    out = coral(repo, "merge-shards", INDEX).stderr.decode()
    assert "2 tensor(s) from their side" in out and "wrote and staged 2 shard(s)" in out
    assert git(repo, "diff", "--name-only", "--diff-filter=U") == ""  # nothing left unmerged
    git(repo, "commit", "-qm", "merge tune into reshard")
    assert sorted(p.name for p in repo.glob("model-*")) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    got = model(repo, "HEAD")
    assert sorted(got) == sorted(STATE)
    for n in STATE:
        assert np.array_equal(got[n], b[n]), n
    (fd,) = coral_git.diff("HEAD^2", "HEAD", repo=repo)  # their version vs the merge: same tensors
    assert fd.tensors == []
    assert git(repo, "status", "--porcelain") == ""  # the written shards are exactly what was staged


def test_resharded_both_changed_names_the_tensor(repo: Path) -> None:
    setup(repo)
    branch_edit(repo, "reshard", {"layers.4.weight": 2.0}, 2)
    branch_edit(repo, "tune", {"layers.4.weight": 3.0, "head.weight": 0.5}, 3)
    git(repo, "checkout", "-q", "reshard")
    git(repo, "merge", "--no-edit", "tune", check=False)
    proc = coral(repo, "merge-shards", INDEX, check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "conflict  layers.4.weight" in err and "head.weight" not in err
    assert "Traceback" not in err


def test_both_sides_resharded_differently(repo: Path) -> None:
    setup(repo)
    a = branch_edit(repo, "two", {"layers.0.weight": 1.5}, 2)
    b = branch_edit(repo, "four", {"head.weight": 0.5}, 4)
    git(repo, "checkout", "-q", "two")
    assert "CONFLICT" in git(repo, "merge", "--no-edit", "four", check=False)  # the index.json, as text
    coral(repo, "merge-shards", INDEX)
    git(repo, "commit", "-qm", "merge")
    assert sorted(p.name for p in repo.glob("model-*")) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    got = model(repo, "HEAD")
    want = {**STATE, "layers.0.weight": a["layers.0.weight"], "head.weight": b["head.weight"]}
    assert sorted(got) == sorted(want) and all(np.array_equal(got[n], want[n]) for n in want)
    assert git(repo, "status", "--porcelain") == ""
