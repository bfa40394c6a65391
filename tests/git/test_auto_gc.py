"""Automatic maintenance (``coral.gc.auto``): adds start a detached ``git coral gc --auto`` that packs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from helpers import commit_versions, coral, git, make_state, save_safetensors, sha256

from coral_git.git import autogc
from coral_git.git.repo import find_repo
from coral_git.store import packs


def wait_for_gc(store: Path, timeout: float = 180.0) -> None:
    """Until no gc holds ``gc.pid`` (the background child finished)."""
    deadline = time.monotonic() + timeout
    time.sleep(0.5)  # a child started just now may not hold the lock yet
    while autogc.running(store) is not None or _young_child(store):
        assert time.monotonic() < deadline, "background gc did not finish"
        time.sleep(0.2)


def _young_child(store: Path) -> bool:
    """A gc.log written in the last second without a summary: a child still starting up."""
    log = store / autogc.LOG_FILE
    return log.is_file() and time.time() - log.stat().st_mtime < 1.0 and "gc --auto:" not in log.read_text()


def loose_count(store: Path) -> int:
    return sum(1 for _ in packs.loose_stats(store / "objects"))


def tiny_model(seed: int, tensors: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"t{i}": rng.standard_normal(64).astype(np.float32) for i in range(tensors)}


def test_estimate_counts_exactly_when_few_and_extrapolates_when_many(tmp_path: Path) -> None:
    objects = tmp_path / "objects"
    assert autogc.estimate_loose(objects) == autogc.Loose(0, 0, True)
    rng = np.random.default_rng(0)
    for _ in range(2000):
        cid = rng.bytes(16).hex()
        (objects / cid[:2]).mkdir(parents=True, exist_ok=True)
        (objects / cid[:2] / cid[2:]).write_bytes(b"x" * 10)
    (objects / "ab" / ".tmp-123-x").parent.mkdir(exist_ok=True)
    (objects / "ab" / ".tmp-123-x").write_bytes(b"temp")  # never counted
    exact = autogc.estimate_loose(objects, enough=10**9)
    assert exact == autogc.Loose(2000, 20000, True)
    est = autogc.estimate_loose(objects)
    assert not est.exact and 1200 < est.objects < 2800 and abs(est.bytes - est.objects * 10) <= 10


def test_gc_auto_by_hand_says_why_and_does_nothing_below_threshold(repo: Path) -> None:
    save_safetensors(repo / "m.safetensors", tiny_model(1))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "m")
    store = repo / ".git" / "coral"
    before = loose_count(store)
    assert before > 0
    err = coral(repo, "gc", "--auto").stderr.decode()
    assert "gc --auto: nothing to do" in err and f"{before} loose object(s)" in err and "below coral.gc.auto = 6700" in err
    assert loose_count(store) == before and not (store / "packs").exists()
    git(repo, "config", "coral.gc.auto", "0")
    assert "automatic gc is off (coral.gc.auto = 0)" in coral(repo, "gc", "--auto").stderr.decode()
    git(repo, "config", "coral.gc.auto", "2")
    err = coral(repo, "gc", "--auto").stderr.decode()
    assert "more than coral.gc.auto = 2 objects" in err and "packed" in err
    assert loose_count(store) == 0


def test_auto_gc_keeps_young_unreachable_objects(repo: Path) -> None:
    """Auto gc packs; it drops only what the grace period allows (an add not committed yet stays)."""
    git(repo, "config", "coral.gc.auto", "1")
    save_safetensors(repo / "m.safetensors", tiny_model(1))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "m")
    save_safetensors(repo / "m.safetensors", tiny_model(2))
    git(repo, "add", "m.safetensors")  # staged, then thrown away: unreachable, but young
    store = repo / ".git" / "coral"
    wait_for_gc(store)
    stored = len(packs.inventory(find_repo(repo).store))
    git(repo, "reset", "-q", "--hard")
    coral(repo, "gc", "--auto")
    assert len(packs.inventory(find_repo(repo).store)) == stored  # 7 reachable (with the skeleton), 6 young
    assert loose_count(store) == 0
    res = coral(repo, "gc", "--prune=now").stderr.decode()  # the explicit prune does drop them
    assert "removed 6 object(s)" in res


def test_spawn_does_not_wait_and_one_gc_runs_at_a_time(repo: Path) -> None:
    save_safetensors(repo / "m.safetensors", tiny_model(3))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "m")
    git(repo, "config", "coral.gc.auto", "1")
    r = find_repo(repo)
    store = r.store_root
    with autogc.gc_lock(store) as holder:
        assert holder is None
        assert autogc.running(store) == os.getpid()
        assert autogc.maybe_spawn(r) is None  # a gc runs: none is started
        err = coral(repo, "gc", "--auto").stderr.decode()
        assert f"another gc is running (pid {os.getpid()}); skipped" in err
    assert autogc.running(store) is None  # released with its holder: never stale
    (store / autogc.PID_FILE).write_text("999999 elsewhere\n")  # left by a killed gc: no lock held
    assert autogc.running(store) is None
    n = loose_count(store)
    proc = autogc.maybe_spawn(r)
    assert proc is not None
    assert proc.poll() is None  # the add returned while the gc child is still running
    assert os.getsid(proc.pid) == proc.pid  # its own session: detached from git's terminal and signals
    assert proc.wait(timeout=120) == 0
    log = (store / autogc.LOG_FILE).read_text()
    assert f"gc --auto: {n} loose object(s)" in log and f"packed {n} object(s)" in log
    assert loose_count(store) == 0


def test_adds_through_git_trigger_background_gc(repo: Path) -> None:
    """The filter-process session that stored objects starts the gc; the store ends packed."""
    git(repo, "config", "coral.gc.auto", "20")
    store = repo / ".git" / "coral"
    shas = []
    for v in range(8):
        save_safetensors(repo / "m.safetensors", tiny_model(v, tensors=8))
        shas.append(sha256(repo / "m.safetensors"))
        git(repo, "add", "m.safetensors")
        git(repo, "commit", "-qm", f"v{v}")
    wait_for_gc(store)
    assert list((store / "packs").glob("pack-*.pack")), "no background gc packed the store"
    assert loose_count(store) <= 20
    assert "gc --auto:" in (store / autogc.LOG_FILE).read_text()
    coral(repo, "fsck")
    for back, want in enumerate(reversed(shas)):
        git(repo, "checkout", "-q", f"HEAD~{back}", "--", "m.safetensors")
        assert sha256(repo / "m.safetensors") == want


def test_training_loop_of_200_checkpoints_ends_packed(repo: Path) -> None:
    import torch

    from coral_git.integrations.checkpoints import list_checkpoints
    from coral_git.integrations.torch import CheckpointManager, load_checkpoint

    git(repo, "config", "coral.gc.auto", "60")
    store = repo / ".git" / "coral"
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(32, 8), torch.randn(32, 2)
    with CheckpointManager(repo, model, opt, branch="ckpt") as mgr:
        for _ in range(200):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            mgr.save()
    last = {k: v.clone() for k, v in model.state_dict().items()}
    wait_for_gc(store)
    total = len(packs.inventory(find_repo(repo).store))
    loose = loose_count(store)
    assert total > 400  # every checkpoint stored new chunks
    assert loose <= 60 + 20, f"{loose} of {total} objects still loose"
    assert list((store / "packs").glob("pack-*.pack"))
    assert len(list_checkpoints(repo, "ckpt")) == 200
    coral(repo, "fsck")
    fresh = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    load_checkpoint(repo, fresh, branch="ckpt")
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, last[k])


def test_perturbed_versions_still_check_out_after_background_gc(repo: Path) -> None:
    """Deltas on packed keyframes: a bigger model over several adds, gc in between."""
    git(repo, "config", "coral.gc.auto", "4")
    git(repo, "config", "coral.chunkSize", "16k")
    state = make_state(seed=2, layers=2, width=128)
    shas = commit_versions(repo, "w.safetensors", state, 4, after=lambda: wait_for_gc(repo / ".git" / "coral"))
    coral(repo, "fsck")
    for back, want in enumerate(reversed(shas)):
        git(repo, "checkout", "-q", f"HEAD~{back}", "--", "w.safetensors")
        assert sha256(repo / "w.safetensors") == want
