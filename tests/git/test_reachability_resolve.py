"""Library-level tests of reachability (what gc keeps) and of merge resolution, on real repositories."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import git, make_state, perturb, save_safetensors

from coral_git.core import pointer as ptr
from coral_git.errors import UsageError
from coral_git.git.reachability import reachable
from coral_git.git.repo import find_repo
from coral_git.merge.resolve import file_conflicts, resolve, unmerged

MODEL = "model.safetensors"


def staged_pointer(repo: Path, path: str = MODEL) -> ptr.Pointer:
    return ptr.parse(git(repo, "cat-file", "blob", f":{path}").encode())


def test_reachable_sees_history_reflog_index_and_stash_but_not_loose_blobs(repo: Path) -> None:
    s = make_state(seed=1, layers=2, width=64)
    versions = []
    for seed in range(5):
        s = perturb(s, seed=seed)
        save_safetensors(repo / MODEL, s)
        git(repo, "add", MODEL)
        versions.append(staged_pointer(repo))
        if seed < 3:
            git(repo, "commit", "-qm", f"v{seed}")
    # v0..v2 committed; reset HEAD back to v0 (v1, v2 live on in the reflog only)
    git(repo, "reset", "-q", "--hard", "HEAD~2")
    # v3: staged, then stashed; v4: staged and still in the index
    save_safetensors(repo / MODEL, perturb(s, seed=3))
    git(repo, "add", MODEL)
    stashed = staged_pointer(repo)
    git(repo, "stash", "-q")
    save_safetensors(repo / MODEL, perturb(s, seed=4))
    git(repo, "add", MODEL)
    indexed = staged_pointer(repo)
    # a pointer blob that no ref, reflog, index or stash names
    orphan = versions[4]
    git(repo, "hash-object", "-w", "--stdin", "--no-filters", input=orphan.encode())

    reach = reachable(find_repo(repo).common_dir)
    ids = {p.file_id for p in reach.pointers.values()}
    assert {v.file_id for v in versions[:3]} <= ids  # history and reflog
    assert stashed.file_id in ids and indexed.file_id in ids
    assert orphan.file_id not in ids or orphan.file_id in (stashed.file_id, indexed.file_id)
    assert reach.chunk_ids() >= versions[0].chunk_ids()
    assert not reach.broken and not reach.missing


def test_reachable_reports_a_damaged_pointer_as_broken(repo: Path) -> None:
    save_safetensors(repo / MODEL, make_state(seed=2, layers=1, width=32))
    git(repo, "add", MODEL)
    text = staged_pointer(repo).encode()
    bad = text.replace(b"chunking ", b"chunking 1", 1)
    oid = git(repo, "hash-object", "-w", "--stdin", "--no-filters", input=bad).strip()
    git(repo, "update-index", "--cacheinfo", f"100644,{oid},{MODEL}")
    git(repo, "commit", "-qm", "damaged")
    reach = reachable(find_repo(repo).common_dir)
    assert oid in reach.broken


@pytest.fixture
def conflicted(repo: Path) -> Path:
    """Both branches change the same two tensors differently: a merge with two tensor conflicts."""
    base = make_state(seed=3, layers=2, width=32)
    save_safetensors(repo / MODEL, base)
    git(repo, "add", MODEL)
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-q", "-b", "other")
    save_safetensors(repo / MODEL, perturb(base, seed=11, scale=0.1))
    git(repo, "commit", "-qam", "theirs")
    git(repo, "checkout", "-q", "main")
    save_safetensors(repo / MODEL, perturb(base, seed=12, scale=0.1))
    git(repo, "commit", "-qam", "ours")
    res = git(repo, "merge", "-q", "other", check=False)
    assert unmerged(find_repo(repo)), res
    return repo


def test_resolve_step_by_step_then_staged(conflicted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(conflicted)  # paths are taken relative to the current directory, as on the command line
    r = find_repo(conflicted)
    [fc] = file_conflicts(r)
    names = sorted(c.name for c in fc.conflicts)
    assert fc.path == MODEL and len(names) >= 2
    first = resolve(r, MODEL, "theirs", [names[0]])
    assert not first.staged and sorted(c.name for c in first.remaining) == names[1:]
    assert unmerged(r)  # nothing staged while a conflict is left
    with pytest.raises(UsageError):
        resolve(r, MODEL, "ours", ["no-such-tensor.*"])
    with pytest.raises(UsageError):
        resolve(r, MODEL, "not-a-strategy")
    done = resolve(r, MODEL, "average")
    assert done.staged and not done.remaining and not unmerged(r)
    assert done.counts.get("average", 0) == len(names) - 1 and done.counts.get("theirs", 0) >= 1
    # the staged pointer is the work-tree file cleaned: checking it out again gives the same bytes
    merged = (conflicted / MODEL).read_bytes()
    assert ptr.parse(git(conflicted, "cat-file", "blob", f":{MODEL}").encode()).size == len(merged)
    git(conflicted, "commit", "-qm", "merged")
    (conflicted / MODEL).unlink()
    git(conflicted, "checkout", "--", MODEL)
    assert (conflicted / MODEL).read_bytes() == merged
    assert np.frombuffer(merged, dtype=np.uint8).size == len(merged)


def test_resolve_refuses_a_path_without_conflict(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    with pytest.raises(UsageError, match="no unresolved merge conflict"):
        resolve(find_repo(repo), MODEL, "ours")
