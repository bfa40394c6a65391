"""Train a small MLP on scikit-learn's bundled digits and version every checkpoint with coral-git.

    python examples/train_digits.py --repo /tmp/digits-run            # train 10 epochs
    python examples/train_digits.py --repo /tmp/digits-run --resume   # continue from the latest checkpoint
    cd /tmp/digits-run && git coral checkpoints --metric accuracy     # best first

No network: the data ships with scikit-learn. Needs torch and scikit-learn.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits

from coral_git.integrations.torch import CheckpointManager, CheckpointPolicy


def ensure_repo(path: Path) -> None:
    """A git repository with coral-git set up (created if missing)."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "coral", "init"], cwd=path, check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path("digits-run"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--resume", action="store_true", help="continue from the newest checkpoint on the branch")
    ap.add_argument("--async", dest="async_", action="store_true", help="encode and commit on a background thread")
    ap.add_argument("--branch", default="checkpoints")
    args = ap.parse_args()
    ensure_repo(args.repo)

    # deterministic CPU training, so a resumed run ends bit-identical to an uninterrupted one
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    xtr, ytr, xte, yte = x[:1400], y[:1400], x[1400:], y[1400:]

    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    policy = CheckpointPolicy(every_n_epochs=2, monitor="accuracy", mode="max", keep_best=3, keep_last=3)

    def report(ck) -> None:
        print(f"  checkpoint {ck.commit[:12]} ({ck.reason}) {' '.join(ck.tags)}", file=sys.stderr)

    with CheckpointManager(args.repo, model, opt, sched, branch=args.branch, policy=policy, async_=args.async_, callbacks=[report]) as mgr:
        start = 0
        if args.resume:
            info = mgr.resume()
            start = info.epoch if info else 0
            print(f"resumed at epoch {start}" if info else "nothing to resume; starting fresh", file=sys.stderr)
        for epoch in range(start + 1, args.epochs + 1):
            model.train()
            perm = torch.randperm(len(xtr))
            for i in range(0, len(xtr), 64):
                idx = perm[i : i + 64]
                loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                mgr.step()
            sched.step()
            model.eval()
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()
            print(f"epoch {epoch}: loss {loss.item():.4f} accuracy {acc:.4f}", file=sys.stderr)
            mgr.epoch_end(epoch, accuracy=acc, loss=loss.item())
    print(f"done; try: cd {args.repo} && git coral checkpoints --metric accuracy", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
