"""Training integration: a real CPU run on scikit-learn's digits, checkpoint policies, exact resume, async."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import coral, git, sha256

from coral_git.errors import CheckpointError, CoralError
from coral_git.integrations.checkpoints import format_message, parse_message
from coral_git.integrations.torch import CheckpointManager, CheckpointPolicy, list_checkpoints, load_checkpoint

EPOCHS = 6


@pytest.fixture(autouse=True)
def _deterministic():
    """Deterministic CPU settings for this module only."""
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(det)


def digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.int64)
    return x[:1400], y[:1400], x[1400:], y[1400:]


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(seed: int):
    seed_all(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(48, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    return model, opt, sched


def run_epochs(model, opt, sched, first: int, last: int, data, mgr=None) -> list[float]:
    """Train epochs first..last; every RNG (torch, numpy, python) is consumed so resume must restore all."""
    xtr, ytr, xte, yte = data
    accs = []
    for epoch in range(first, last + 1):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 100):
            idx = perm[i : i + 100]
            noise = torch.from_numpy(np.random.normal(0, 0.05, size=(len(idx), 64)).astype(np.float32))
            xb = xtr[idx] + noise * random.random()
            loss = torch.nn.functional.cross_entropy(model(xb), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if mgr is not None:
                mgr.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        accs.append(acc)
        if mgr is not None:
            mgr.epoch_end(epoch, accuracy=acc, loss=loss.item())
    return accs


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_training_run_policies_trailers_and_exact_resume(repo: Path, tmp_path: Path) -> None:
    data = digits()
    # the user is mid-edit: a modified tracked file, a staged file and an untracked one
    (repo / "notes.txt").write_text("v1\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "notes")
    (repo / "notes.txt").write_text("v2, not committed\n")
    (repo / "staged.txt").write_text("staged\n")
    git(repo, "add", "staged.txt")
    (repo / "untracked.txt").write_text("mine\n")
    index_before = sha256(repo / ".git" / "index")
    head_before = git(repo, "rev-parse", "HEAD").strip()
    status_before = git(repo, "status", "--porcelain")

    model, opt, sched = build(0)
    saved = []
    policy = CheckpointPolicy(every_n_epochs=2, monitor="accuracy", mode="max", keep_best=2, keep_last=2)
    mgr = CheckpointManager(repo, model, opt, sched, policy=policy, callbacks=[saved.append])
    accs = run_epochs(model, opt, sched, 1, EPOCHS, data, mgr)
    mgr.close()
    final = {k: v.clone() for k, v in model.state_dict().items()}
    final_opt = opt.state_dict()

    # the user's work tree, index and HEAD are untouched
    assert sha256(repo / ".git" / "index") == index_before
    assert git(repo, "rev-parse", "HEAD").strip() == head_before
    assert git(repo, "status", "--porcelain") == status_before
    assert (repo / "notes.txt").read_text() == "v2, not committed\n"
    assert git(repo, "diff", "--cached", "--name-only").split() == ["staged.txt"]
    assert not (repo / "model.safetensors").exists()

    # expected commits: every 2nd epoch, plus each epoch that improved the best accuracy
    expected, best = [], None
    for epoch, acc in enumerate(accs, 1):
        improved = best is None or acc > best
        best = acc if improved else best
        if epoch % 2 == 0 or improved:
            expected.append(epoch)
    infos = list_checkpoints(repo)
    assert [i.epoch for i in infos] == expected[::-1]
    assert [c.epoch for c in saved] == expected
    assert [i.commit for i in infos] == [c.commit for c in saved][::-1]
    steps_per_epoch = 14
    assert [i.step for i in infos] == [e * steps_per_epoch for e in expected[::-1]]
    for i in infos:
        assert i.metrics["accuracy"] == accs[i.epoch - 1]  # exact float round trip through the trailer
        assert i.code == head_before
    assert git(repo, "rev-list", "--count", "checkpoints") == f"{len(expected)}\n"

    # real git reads the trailers
    msg = git(repo, "log", "-1", "--format=%B", "checkpoints")
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=msg, capture_output=True, text=True).stdout
    assert f"Coral-Epoch: {EPOCHS}" in parsed and f"Coral-Metric-accuracy: {accs[-1]!r}" in parsed

    # tags: best 2 by accuracy (earlier wins ties), last 2 by time
    ranked = sorted(range(len(expected)), key=lambda n: (-accs[expected[n] - 1], n))
    by_epoch = {c.epoch: c.commit for c in saved}
    assert git(repo, "rev-parse", "best/accuracy/1").strip() == by_epoch[expected[ranked[0]]]
    assert git(repo, "rev-parse", "best/accuracy/2").strip() == by_epoch[expected[ranked[1]]]
    assert git(repo, "rev-parse", "last/1").strip() == by_epoch[expected[-1]]
    assert git(repo, "rev-parse", "last/2").strip() == by_epoch[expected[-2]]
    assert list_checkpoints(repo, metric="accuracy")[0].commit == by_epoch[expected[ranked[0]]]

    # CLI: best first, and JSON
    out = coral(repo, "checkpoints", "--metric", "accuracy").stdout.decode().splitlines()
    assert out[2].startswith(by_epoch[expected[ranked[0]]][:12])
    rows = json.loads(coral(repo, "checkpoints", "--json").stdout)
    assert [r["epoch"] for r in rows] == expected[::-1]

    # the branch holds pointers; git's own checkout smudges them back to the saved weights
    assert git(repo, "cat-file", "-p", "checkpoints:model.safetensors").startswith("coral-pointer")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"), "checkpoints")
    from safetensors.torch import load_file

    assert same_state(load_file(str(tmp_path / "wt" / "model.safetensors")), final)

    # resume from epoch 2 into a differently initialised model: bit-identical end state
    model2, opt2, sched2 = build(123)
    seed_all(999)  # scramble every RNG; load must restore them
    rev2 = by_epoch[2]
    info = load_checkpoint(repo, model2, opt2, sched2, rev=rev2)
    assert (info.epoch, info.step) == (2, 2 * steps_per_epoch)
    accs2 = run_epochs(model2, opt2, sched2, 3, EPOCHS, data)
    assert accs2 == accs[2:]
    assert same_state(model2.state_dict(), final)
    s1, s2 = final_opt["state"], opt2.state_dict()["state"]
    assert all(same_state(s1[k], s2[k]) for k in s1)

    # best= goes through the best tag and restores counters
    model3, _, _ = build(5)
    info = load_checkpoint(repo, model3, best="accuracy")
    assert info.epoch == expected[ranked[0]] and "best/accuracy/1" in info.tags


def test_manager_resume_continues_counters_and_branch(repo: Path) -> None:
    data = digits()
    model, opt, sched = build(0)
    policy = CheckpointPolicy(every_n_epochs=1)
    with CheckpointManager(repo, model, opt, sched, policy=policy) as mgr:
        assert mgr.resume() is None  # nothing to resume yet: a fresh start
        run_epochs(model, opt, sched, 1, 2, data, mgr)
    model, opt, sched = build(7)
    with CheckpointManager(repo, model, opt, sched, policy=policy) as mgr:
        info = mgr.resume()
        assert info is not None and (mgr.epoch, mgr.global_step) == (2, 28)
        run_epochs(model, opt, sched, 3, 3, data, mgr)
    assert [(i.epoch, i.step) for i in list_checkpoints(repo)] == [(3, 42), (2, 28), (1, 14)]


ASYNC_SCRIPT = """
import pathlib, shutil, sys, torch
from coral_git.integrations.torch import CheckpointManager, CheckpointPolicy
ok_repo, broken_repo, out = sys.argv[1:4]
torch.manual_seed(0)
model = torch.nn.Linear(64, 64)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
policy = CheckpointPolicy(every_n_epochs=1)
ok = CheckpointManager(ok_repo, model, opt, policy=policy, async_=True, max_pending=2)
broken = CheckpointManager(broken_repo, model, opt, policy=policy, async_=True)
for epoch in range(1, 6):
    model(torch.randn(8, 64)).sum().backward()
    opt.step()
    ok.epoch_end(epoch, score=epoch / 10)
    if epoch <= 2:
        broken.epoch_end(epoch, score=epoch / 10)
broken.flush()
store = pathlib.Path(broken_repo) / ".git" / "coral" / "objects"
shutil.rmtree(store)
store.write_text("not a directory")  # the repository can no longer be written
broken.save(score=9.0)
torch.save(model.state_dict(), out)
print("done")
# no close(): the exit hook must commit what is queued, and report the failure
"""


def test_async_exit_commits_everything_and_reports_failures(repo: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    git(broken, "init", "-q")
    coral(broken, "init")
    script = tmp_path / "train_async.py"
    script.write_text(ASYNC_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(repo), str(broken), str(tmp_path / "final.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.stdout.strip() == "done", proc.stderr
    # normal exit without close(): nothing lost
    infos = list_checkpoints(repo)
    assert [i.epoch for i in infos] == [5, 4, 3, 2, 1]
    assert [i.metrics["score"] for i in infos] == [0.5, 0.4, 0.3, 0.2, 0.1]
    final = torch.load(tmp_path / "final.pt", weights_only=True)
    model = torch.nn.Linear(64, 64)
    load_checkpoint(repo, model)
    assert same_state(model.state_dict(), final)
    # unwritable repository: one clear line on stderr at exit, the earlier checkpoints intact
    assert proc.stderr.count("coral-git: background checkpoint failed") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [i.epoch for i in list_checkpoints(broken)] == [2, 1]


def test_async_failure_raises_on_next_call(repo: Path) -> None:
    model = torch.nn.Linear(4, 4)
    mgr = CheckpointManager(repo, model, async_=True)
    mgr.save(score=1.0)
    mgr.flush()
    store = repo / ".git" / "coral" / "objects"
    import shutil

    shutil.rmtree(store)
    store.write_text("not a directory")
    with torch.no_grad():
        model.weight.add_(1.0)  # new content, so the store must be written
    assert mgr.save(score=2.0) is None  # queued; the failure comes later
    with pytest.raises(CheckpointError, match="background checkpoint failed"):
        for _ in range(400):
            time.sleep(0.05)
            mgr.step()
    mgr.close()
    assert len(list_checkpoints(repo)) == 1


def test_async_save_copies_tensors_before_returning(repo: Path) -> None:
    model = torch.nn.Linear(8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    expected = []
    with CheckpointManager(repo, model, opt, async_=True) as mgr:
        for value in (1.0, 2.0, 3.0):  # the 2nd and 3rd saves reuse the buffers of the earlier ones
            with torch.no_grad():
                model.weight.fill_(value)
            model(torch.ones(1, 8)).sum().backward()
            opt.step()
            expected.append(({k: v.clone() for k, v in model.state_dict().items()}, opt.state_dict()["state"][0]["momentum_buffer"].clone()))
            mgr.save()
            with torch.no_grad():
                model.weight.zero_()  # must not leak into the queued checkpoint
            if value == 2.0:
                mgr.flush()
    for back, (state, momentum) in zip((2, 1, 0), expected, strict=True):
        fresh = torch.nn.Linear(8, 8)
        fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
        load_checkpoint(repo, fresh, fresh_opt, rev=f"checkpoints~{back}")
        assert same_state(fresh.state_dict(), state)
        assert torch.equal(fresh_opt.state_dict()["state"][0]["momentum_buffer"], momentum)


class Tied(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(50, 16)
        self.head = torch.nn.Linear(16, 50, bias=False)
        self.head.weight = self.embed.weight


def test_tied_weights_stored_once_and_restored(repo: Path) -> None:
    torch.manual_seed(0)
    model = Tied()
    with CheckpointManager(repo, model) as mgr:
        mgr.save()
    ptr = git(repo, "cat-file", "-p", "checkpoints:model.safetensors")
    assert "embed.weight" in ptr and "head.weight" not in ptr
    torch.manual_seed(1)
    fresh = Tied()
    load_checkpoint(repo, fresh)
    assert torch.equal(fresh.head.weight, model.embed.weight)
    assert fresh.head.weight is fresh.embed.weight


def test_keep_last_as_branch_keeps_best_alive(repo: Path) -> None:
    model = torch.nn.Linear(4, 2)
    policy = CheckpointPolicy(every_n_epochs=1, monitor="loss", mode="min", keep_best=1, keep_last=2, keep_last_as="branch")
    losses = [0.9, 0.2, 0.5, 0.6, 0.7]
    saved = []
    with CheckpointManager(repo, model, policy=policy, callbacks=[saved.append]) as mgr:
        for epoch, loss in enumerate(losses, 1):
            with torch.no_grad():
                model.weight.fill_(epoch)
            mgr.epoch_end(epoch, loss=loss)
    assert [i.epoch for i in list_checkpoints(repo)] == [5, 4]
    assert git(repo, "rev-list", "--count", "checkpoints") == "2\n"
    fresh = torch.nn.Linear(4, 2)
    info = load_checkpoint(repo, fresh, best="loss")
    assert info.epoch == 2 and torch.all(fresh.weight == 2)
    assert git(repo, "log", "-1", "--format=%s", "best/loss/1").startswith("checkpoint epoch 2")
    assert git(repo, "rev-list", "--count", "best/loss/1") == "1\n"  # it no longer holds epoch 1 alive
    # nothing but the reflog reaches epochs 1 and 3 any more
    reachable = git(repo, "rev-list", "--all").split()
    assert len([c for c in reachable if "Coral-Checkpoint" in git(repo, "log", "-1", "--format=%B", c)]) == 3
    # once the reflog forgets them, git coral gc reclaims the evicted checkpoints' chunks
    git(repo, "reflog", "expire", "--expire-unreachable=now", "--all")
    out = coral(repo, "gc", "--prune=now").stderr.decode()
    assert "removed 0 " not in out
    with pytest.raises(CoralError, match="missing"):
        load_checkpoint(repo, torch.nn.Linear(4, 2), rev=saved[0].commit)  # epoch 1
    for rev, epoch in (("checkpoints", 5), ("checkpoints~1", 4), ("best/loss/1", 2)):
        fresh = torch.nn.Linear(4, 2)
        assert load_checkpoint(repo, fresh, rev=rev).epoch == epoch and torch.all(fresh.weight == epoch)


def test_step_and_time_policies(repo: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with CheckpointManager(repo, model, policy=CheckpointPolicy(every_n_epochs=None, every_n_steps=3)) as mgr:
        commits = [mgr.step() for _ in range(7)]
    assert [c is not None for c in commits] == [False, False, True, False, False, True, False]
    assert [i.reason for i in list_checkpoints(repo)] == ["step", "step"]
    with CheckpointManager(repo, model, branch="timed", policy=CheckpointPolicy(every_n_epochs=None, every_minutes=1e-4)) as mgr:
        time.sleep(0.01)
        assert mgr.step() is not None
    assert list_checkpoints(repo, branch="timed")[0].reason == "time"


def test_refuses_checked_out_branch_and_uninitialised_repo(repo: Path, tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    with pytest.raises(CheckpointError, match="checked out"):
        CheckpointManager(repo, model, branch="main")
    plain = tmp_path / "plain"
    plain.mkdir()
    git(plain, "init", "-q")
    with pytest.raises(CheckpointError, match="git coral init"):
        CheckpointManager(plain, model)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        load_checkpoint(repo, model)
    proc = coral(repo, "checkpoints", "--mode", "sideways", check=False)
    assert proc.returncode == 2 and proc.stderr.decode().startswith("error:")


def test_trailers_for_any_metric_name_round_trip() -> None:
    metrics = {"accuracy": 0.93, "val_loss": 1e-7, "val/acc": 0.5, "Top-5": 1, "tokens": 123456789012}
    msg = format_message(7, 700, metrics, reason="epoch", monitor=("val/acc", "max"))
    info = parse_message("c" * 40, msg)
    assert info is not None and info.metrics == metrics and (info.epoch, info.step) == (7, 700)
    assert info.monitor == ("val/acc", "max")
    parsed = subprocess.run(["git", "interpret-trailers", "--parse"], input=msg, capture_output=True, text=True).stdout
    assert "Coral-Epoch: 7" in parsed and "Coral-Metric: val/acc=0.5" in parsed
    assert parse_message("c" * 40, "just a commit\n\nSigned-off-by: x\n") is None


def test_adapters_say_what_is_missing() -> None:
    from coral_git.integrations import lightning, transformers

    for mod, cls in ((lightning, "CoralCheckpoint"), (transformers, "CoralCallback")):
        pkg = "lightning" if mod is lightning else "transformers"
        try:
            __import__(pkg)
            pytest.fail(f"{pkg} is installed here; this test checks the message when it is absent")
        except ImportError:
            pass
        with pytest.raises(CheckpointError, match=f"pip install {pkg}"):
            getattr(mod, cls)(".")
