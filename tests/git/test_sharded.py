"""Sharded checkpoints (HF ``model.safetensors.index.json`` + shards) as one model, through real git:
re-sharding changes no tensor and stores ~nothing, a changed tensor shows once under its name, a
tensor that moved to another shard is stored as a delta on its previous version, and the API opens
the model by its index path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import coral, git, make_state, save_safetensors

import coral_git

INDEX = "model.safetensors.index.json"
STATE = make_state(0, layers=6, width=256)  # 6 × 256 KiB weights + biases + head: ~1.6 MB
NAMES = list(STATE)


def write_sharded(repo: Path, state: dict[str, np.ndarray], n: int) -> list[str]:
    """Save ``state`` as ``n`` shards (tensors in order, split evenly) plus the index; remove stale shards."""
    for old in repo.glob("model-*-of-*.safetensors"):
        old.unlink()
    names = list(state)
    files, wm = [], {}
    for k in range(n):
        part = names[k * len(names) // n : (k + 1) * len(names) // n]
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_safetensors(repo / fname, {t: state[t] for t in part}, metadata={"format": "pt"})
        files.append(fname)
        wm.update(dict.fromkeys(part, fname))
    total = sum(v.nbytes for v in state.values())
    (repo / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": wm}, indent=2))
    return files


def commit_all(repo: Path, msg: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", msg)


def store_bytes(repo: Path) -> int:
    root = repo / ".git" / "coral"
    return sum(p.stat().st_size for d in ("objects", "packs") for p in (root / d).rglob("*") if p.is_file())


def diff_json(repo: Path, *revs: str) -> list[dict]:
    return json.loads(coral(repo, "diff", "--json", *revs).stdout)


def test_reshard_3_to_2_changes_no_tensor_and_stores_nothing(repo: Path) -> None:
    write_sharded(repo, STATE, 3)
    commit_all(repo, "3 shards")
    before = store_bytes(repo)
    write_sharded(repo, STATE, 2)
    commit_all(repo, "re-sharded into 2")
    new = store_bytes(repo) - before
    total = sum(v.nbytes for v in STATE.values())
    print(f"re-shard 3→2: {new} new store bytes for {total} tensor bytes ({100 * new / total:.3f}%), first commit {before}")
    assert new < 0.01 * total  # only the two new shard headers

    fds = diff_json(repo, "HEAD~1", "HEAD")
    assert [fd["path"] for fd in fds] == [INDEX]  # one logical model, no per-shard entries
    fd = fds[0]
    assert fd["tensors"] == [] and fd["unchanged"] == len(NAMES) == fd["tensors_total"]
    assert fd["old_format"] == "safetensors ×3 shards" and fd["new_format"] == "safetensors ×2 shards"
    text = coral(repo, "diff", "HEAD~1", "HEAD", "--color", "never").stdout.decode()
    assert f"0 of {len(NAMES)} tensors changed" in text and "00001-of-00003" not in text

    log = coral(repo, "log", INDEX).stdout.decode()
    assert log.count("commit ") == 2 and "no tensor changes; metadata changed" in log

    # checkout gives the exact shard files back
    want = (repo / "model-00002-of-00002.safetensors").read_bytes()
    (repo / "model-00002-of-00002.safetensors").unlink()
    git(repo, "checkout", "--", ".")
    assert (repo / "model-00002-of-00002.safetensors").read_bytes() == want


def test_changed_tensor_shows_once_under_its_name(repo: Path) -> None:
    write_sharded(repo, STATE, 3)
    commit_all(repo, "3 shards")
    changed = {k: v.copy() for k, v in STATE.items()}
    changed["layers.3.weight"][:4] += 0.5  # in shard 2 of 3, then in shard 2 of 2 with other neighbours
    write_sharded(repo, changed, 2)
    commit_all(repo, "tune + re-shard")

    (fd,) = diff_json(repo, "HEAD~1", "HEAD")
    assert [(t["name"], t["status"]) for t in fd["tensors"]] == [("layers.3.weight", "modified")]
    assert fd["tensors"][0]["changed_elements"] == 4 * 256 and fd["unchanged"] == len(NAMES) - 1
    entries = coral_git.history(INDEX, tensors=["layers.3.*"], repo=repo)
    assert [e["subject"] for e in entries] == ["tune + re-shard", "3 shards"]

    # work tree vs HEAD: the model is hashed from the work-tree shards, one record again
    w = changed["layers.0.weight"]
    w[0, 0] = 1.0
    write_sharded(repo, changed, 2)
    (fd,) = coral_git.diff(repo=repo)
    assert fd.path == INDEX and [t.name for t in fd.tensors] == ["layers.0.weight"]


def test_moved_tensor_is_stored_as_delta_on_its_previous_version(repo: Path) -> None:
    write_sharded(repo, STATE, 3)
    commit_all(repo, "3 shards")
    # the recent-tensor table is local state (empty after a clone): only the shard index can find the base
    for p in sorted((repo / ".git" / "coral" / "recent").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    changed = {k: v.copy() for k, v in STATE.items()}
    changed["layers.4.weight"][:8] *= 1.01  # moves from shard 3 of 3 to shard 2 of 2 (a new file name)
    before = store_bytes(repo)
    write_sharded(repo, changed, 2)
    commit_all(repo, "tune + re-shard")
    new = store_bytes(repo) - before

    rows = {r["name"]: r for r in json.loads(coral(repo, "show", f"HEAD~1:{INDEX}", "--json").stdout)["tensors"]}
    keyframe = rows["layers.4.weight"]["stored"]
    rows = {r["name"]: r for r in json.loads(coral(repo, "show", f"HEAD:{INDEX}", "--json").stdout)["tensors"]}
    delta = rows["layers.4.weight"]["stored"]
    print(f"moved+changed tensor: keyframe {keyframe} B, stored now {delta} B; commit added {new} store bytes")
    assert delta < 0.1 * keyframe
    assert new < 0.1 * keyframe


def test_api_opens_the_sharded_model_by_its_index(repo: Path) -> None:
    write_sharded(repo, STATE, 3)
    commit_all(repo, "3 shards")
    for rev in ("HEAD", "", None):  # commit, index, work tree
        with coral_git.open(repo / INDEX, rev=rev, repo=repo) as m:
            assert sorted(m) == sorted(NAMES) and m.format == "safetensors ×3 shards"
            for name in ("layers.0.weight", "layers.5.bias", "head.weight"):
                assert np.array_equal(m[name], STATE[name])
    show = coral(repo, "show", INDEX, "--no-stats").stdout.decode()
    assert f"{len(NAMES)} tensors" in show and "layers.5.weight" in show


def test_index_path_selects_the_model_and_untracked_new_shards_count(repo: Path) -> None:
    write_sharded(repo, STATE, 3)
    commit_all(repo, "3 shards")
    changed = {k: v.copy() for k, v in STATE.items()}
    changed["head.weight"][0] += 1.0
    write_sharded(repo, changed, 2)  # not added: the two new shard files are untracked
    (fd,) = diff_json(repo, "HEAD", "--", INDEX)  # the index as the path: its shards are looked at too
    assert fd["path"] == INDEX and fd["new_format"] == "safetensors ×2 shards"
    assert [t["name"] for t in fd["tensors"]] == ["head.weight"] and fd["unchanged"] == len(NAMES) - 1
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tuned head, 2 shards")
    (repo / "model-00001-of-00002.safetensors").write_bytes((repo / "model-00001-of-00002.safetensors").read_bytes())
    assert diff_json(repo) == []  # a touched shard with the same bytes: nothing changed
