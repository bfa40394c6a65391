#!/usr/bin/env python3
"""Training-integration benchmark: checkpoint stall and repository size.

A. Stall per checkpoint: how long ``CheckpointManager.save()`` blocks the training loop for a
   ~1 GiB float32 model (16 x 4096x4096 linear layers, SGD), synchronous and asynchronous,
   against ``torch.save`` of the same state to a file. Between checkpoints every weight is nudged
   like a training step (``w += 1e-3 * N(0,1) * |w|``). The first save (everything new) is shown
   apart from the later ones (median).
B. Repository size after N checkpoints (default 50, one per epoch) of a digits run (MLP
   64->W->W->10 with Adam on scikit-learn's bundled ``load_digits``): the coral-git repository
   (git objects + chunk store) against a git-lfs repository holding the same two files
   (``model.safetensors``, ``training_state.safetensors``) committed once per checkpoint.

Everything runs in a temporary directory with an isolated git config; MB = 10^6 bytes.

    python benchmarks/bench_training.py            # full: 1 GiB model, 50 checkpoints
    python benchmarks/bench_training.py --quick    # smoke: 64 MiB model, 10 checkpoints
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1e6


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cwd: Path, *cmd: str) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}: {p.stderr.strip()}")
    return p.stdout


def isolate_git(work: Path) -> None:
    cfg = work / "gitconfig"
    cfg.write_text("[user]\n\tname = bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n")
    os.environ.update(GIT_CONFIG_GLOBAL=str(cfg), GIT_CONFIG_NOSYSTEM="1")


def new_repo(path: Path, kind: str) -> Path:
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q")
    if kind == "coral":
        sh(path, "git", "coral", "init")
    else:
        sh(path, "git", "lfs", "install", "--local")
        sh(path, "git", "lfs", "track", "*.safetensors")
    sh(path, "git", "add", ".gitattributes")
    sh(path, "git", "commit", "-qm", "init")
    return path


def tree_size(path: Path) -> tuple[int, int]:
    """(sum of file sizes, bytes of disk blocks) under ``path``."""
    apparent = blocks = 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            apparent += st.st_size
            blocks += st.st_blocks * 512
    return apparent, blocks


def _wait_for_gc(store: Path, timeout: float = 600.0) -> None:
    """Until no background ``gc --auto`` holds the store's gc lock."""
    from coral_git.git import autogc

    deadline = time.monotonic() + timeout
    time.sleep(0.5)
    while autogc.running(store) is not None and time.monotonic() < deadline:
        time.sleep(0.2)


# --------------------------------------------------------------------------- A: stall
def bench_stall(work: Path, layers: int, width: int, saves: int) -> dict[str, float]:
    import torch

    from coral_git.integrations.torch import CheckpointManager, CheckpointPolicy

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)])
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    log(f"A: model {nbytes / MB:.0f} MB ({layers} x {width}x{width} float32), {saves} saves per mode")

    def train_step() -> None:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p).mul_(1e-3).mul_(p.abs()))

    out: dict[str, float] = {"model_mb": nbytes / MB}
    # baseline: torch.save of the same state
    times = []
    target = work / "torch_save.pt"
    for _ in range(saves):
        train_step()
        t = time.perf_counter()
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1, "step": 1}, target)
        times.append(time.perf_counter() - t)
        target.unlink()
    out["torch_save_first"], out["torch_save_median"] = times[0], statistics.median(times[1:] or times)
    log(f"A: torch.save {times}")

    for mode in ("sync", "async"):
        repo = new_repo(work / f"stall-{mode}", "coral")
        mgr = CheckpointManager(repo, model, opt, policy=CheckpointPolicy(every_n_epochs=None), async_=mode == "async")
        stalls, background = [], []
        for i in range(saves):
            train_step()
            t = time.perf_counter()
            mgr.save(epoch=i)
            stalls.append(time.perf_counter() - t)
            t = time.perf_counter()
            mgr.flush()  # not part of the stall: the loop would keep training meanwhile
            background.append(time.perf_counter() - t)
        mgr.close()
        out[f"{mode}_first"], out[f"{mode}_median"] = stalls[0], statistics.median(stalls[1:] or stalls)
        if mode == "async":
            out["async_commit_median"] = statistics.median(background[1:] or background)
        _wait_for_gc(repo / ".git" / "coral")  # a background gc --auto's temporary packs are not the store
        out[f"{mode}_store_mb"] = tree_size(repo / ".git")[0] / MB
        log(f"A: {mode} stalls {[round(s, 2) for s in stalls]} background {[round(s, 2) for s in background]}")
        shutil.rmtree(repo)
    return out


# --------------------------------------------------------------------------- B: size
def bench_size(work: Path, checkpoints: int, width: int) -> dict[str, float]:
    import random

    import numpy as np
    import torch
    from sklearn.datasets import load_digits

    from coral_git.integrations import checkpoints as ck
    from coral_git.integrations.torch import MODEL_FILE, STATE_FILE, CheckpointManager, CheckpointPolicy

    torch.set_num_threads(1)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    coral_repo = new_repo(work / "size-coral", "coral")
    mgr = CheckpointManager(coral_repo, model, opt, policy=CheckpointPolicy(every_n_epochs=1))
    stalls = []
    for epoch in range(1, checkpoints + 1):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        t = time.perf_counter()
        mgr.epoch_end(epoch, loss=loss.item())
        stalls.append(time.perf_counter() - t)
    mgr.close()
    log(f"B: {checkpoints} checkpoints, median stall {statistics.median(stalls) * 1000:.0f} ms")

    # the very same bytes, committed to git-lfs
    repo = ck.open_repo(coral_repo)
    infos = list(reversed(ck.history(repo, "checkpoints")))
    lfs_repo = new_repo(work / "size-lfs", "lfs")
    raw = 0
    for info in infos:
        for name in (MODEL_FILE, STATE_FILE):
            data = ck.read_file(repo, info.commit, name)
            raw += len(data)
            (lfs_repo / name).write_bytes(data)
        sh(lfs_repo, "git", "add", MODEL_FILE, STATE_FILE)
        sh(lfs_repo, "git", "commit", "-qm", f"epoch {info.epoch}")
    out = {"checkpoints": len(infos), "raw_mb": raw / MB, "file_mb": len(data) / MB}
    for kind, path in (("coral", coral_repo), ("lfs", lfs_repo)):
        apparent, blocks = tree_size(path / ".git")
        out[f"{kind}_mb"], out[f"{kind}_disk_mb"] = apparent / MB, blocks / MB
    out["stall_ms"] = statistics.median(stalls) * 1000
    model_file = (lfs_repo / MODEL_FILE).stat().st_size
    state_file = (lfs_repo / STATE_FILE).stat().st_size
    out["model_file_mb"], out["state_file_mb"] = model_file / MB, state_file / MB
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--saves", type=int, default=4, help="checkpoints per mode in part A")
    ap.add_argument("--checkpoints", type=int, default=None, help="checkpoints in part B (default 50, quick 10)")
    ap.add_argument("--width", type=int, default=512, help="hidden width of the digits MLP in part B")
    ap.add_argument("--skip-stall", action="store_true")
    ap.add_argument("--skip-size", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-training-", dir=args.workdir))
    isolate_git(work)
    try:
        if not args.skip_stall:
            layers, width = (4, 2048) if args.quick else (16, 4096)
            a = bench_stall(work, layers, width, args.saves)
            print(f"A. stall per checkpoint, {a['model_mb']:.0f} MB float32 model (seconds; first save / median of later ones)")
            print(f"   torch.save (baseline)   {a['torch_save_first']:7.2f} / {a['torch_save_median']:7.2f}")
            for mode in ("sync", "async"):
                ratio = a[f"{mode}_median"] / a["torch_save_median"]
                print(f"   coral {mode:<5}             {a[f'{mode}_first']:7.2f} / {a[f'{mode}_median']:7.2f}   ({ratio:.2f}x torch.save)")
            print(f"   async background commit median {a['async_commit_median']:.2f} s")
            print(f"   repository after {args.saves} saves: sync {a['sync_store_mb']:.0f} MB, async {a['async_store_mb']:.0f} MB")
        if not args.skip_size:
            n = args.checkpoints or (10 if args.quick else 50)
            b = bench_size(work, n, args.width)
            print(
                f"B. repository size after {b['checkpoints']} checkpoints of the digits run "
                f"(model.safetensors {b['model_file_mb']:.2f} MB + training_state.safetensors {b['state_file_mb']:.2f} MB each; "
                f"{b['raw_mb']:.1f} MB raw in all)"
            )
            print(f"   coral-git  {b['coral_mb']:8.1f} MB (disk {b['coral_disk_mb']:.1f} MB)")
            print(f"   git-lfs    {b['lfs_mb']:8.1f} MB (disk {b['lfs_disk_mb']:.1f} MB)")
            print(f"   ratio coral/lfs {b['coral_mb'] / b['lfs_mb']:.2f} (disk {b['coral_disk_mb'] / b['lfs_disk_mb']:.2f}); median sync stall {b['stall_ms']:.0f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
