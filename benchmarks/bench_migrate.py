#!/usr/bin/env python3
"""Migration benchmark: a git-lfs training history converted to coral and back.

A digits run (MLP 64->W->W->10 with Adam on scikit-learn's bundled ``load_digits``) is committed to a
git-lfs repository once per epoch (``model.safetensors`` + ``training_state.safetensors`` with Adam's
moments). Then, each on its own copy:

  1. ``git coral migrate import --everything --dry-run``     (time; predicted store size)
  2. ``git coral migrate import --everything``               (time; store vs .git/lfs/objects)
  3. ``git coral migrate export --everything --to lfs``      (time; same commit ids as the original?)
  4. side by side on a plain-git copy of the same history:
     ``git lfs migrate import --everything --include=*.safetensors`` vs ``git coral migrate import --everything``

Sizes are apparent bytes (sum of file sizes); MB = 10^6 bytes.

    python benchmarks/bench_migrate.py                 # 20 epochs, width 512
    python benchmarks/bench_migrate.py --epochs 5      # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1e6


def sh(cwd: Path, *cmd: str) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}: {p.stderr.strip()}")
    return p.stdout


def timed(cwd: Path, *cmd: str) -> tuple[float, str]:
    t = time.perf_counter()
    out = sh(cwd, *cmd)
    return time.perf_counter() - t, out


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def refs(repo: Path) -> str:
    return sh(repo, "git", "for-each-ref", "--format=%(objectname) %(refname)")


def lfs_history(repo: Path, epochs: int, width: int) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    torch.manual_seed(0)
    np.random.seed(0)
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(), torch.nn.Linear(width, 10)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    repo.mkdir(parents=True)
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "lfs", "install", "--local")
    sh(repo, "git", "lfs", "track", "*.safetensors")
    (repo / "train.py").write_text("# the training script\n")
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(repo / "model.safetensors"))
        state = {}
        for pid, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v) and v.ndim:
                    state[f"{pid}.{k}"] = v.contiguous()
        save_file(state, str(repo / "training_state.safetensors"), metadata={"epoch": str(epoch), "loss": f"{loss.item():.6f}"})
        sh(repo, "git", "add", ".")
        sh(repo, "git", "commit", "-qm", f"epoch {epoch}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--width", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        work = Path(tmp)
        cfg = work / "gitconfig"
        cfg.write_text("[user]\n\tname = bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n")
        os.environ.update(GIT_CONFIG_GLOBAL=str(cfg), GIT_CONFIG_NOSYSTEM="1")
        src = work / "lfs"
        lfs_history(src, args.epochs, args.width)
        lfs_bytes = size(src / ".git" / "lfs" / "objects")
        file_mb = ((src / "model.safetensors").stat().st_size + (src / "training_state.safetensors").stat().st_size) / MB
        original = refs(src)

        dry = work / "dry"
        shutil.copytree(src, dry, symlinks=True)
        t_dry, out = timed(dry, "git", "coral", "migrate", "import", "--everything", "--dry-run", "--json")
        predicted = json.loads(out)["store_bytes"]

        imp = work / "import"
        shutil.copytree(src, imp, symlinks=True)
        t_imp, _ = timed(imp, "git", "coral", "migrate", "import", "--everything", "--json")
        store = size(imp / ".git" / "coral" / "objects")
        t_exp, _ = timed(imp, "git", "coral", "migrate", "export", "--everything", "--to", "lfs", "--json")
        same = refs(imp) == original

        plain = work / "plain"
        shutil.copytree(src, plain, symlinks=True)
        sh(plain, "git", "lfs", "migrate", "export", "--everything", "--include=*.safetensors", "--yes")
        via_lfs = work / "plain-lfs"
        via_coral = work / "plain-coral"
        shutil.copytree(plain, via_lfs, symlinks=True)
        shutil.copytree(plain, via_coral, symlinks=True)
        shutil.rmtree(via_lfs / ".git" / "lfs", ignore_errors=True)
        t_lfs_plain, _ = timed(via_lfs, "git", "lfs", "migrate", "import", "--everything", "--include=*.safetensors", "--yes")
        t_coral_plain, _ = timed(via_coral, "git", "coral", "migrate", "import", "--everything", "--json")
        lfs_plain = size(via_lfs / ".git" / "lfs" / "objects")
        coral_plain = size(via_coral / ".git" / "coral" / "objects")

    n = args.epochs
    print(f"history: {n} epochs x 2 files ({file_mb:.2f} MB per epoch), MLP width {args.width}, digits/Adam")
    print(f"{'':44} {'coral-git':>12} {'git-lfs':>12}")
    print(f"{'LFS history -> coral: dry run':44} {t_dry:>11.2f}s {'':>12}")
    print(f"{'LFS history -> coral: import':44} {t_imp:>11.2f}s {'':>12}")
    print(f"{'  store bytes (predicted by dry run)':44} {predicted / MB:>10.2f}MB {lfs_bytes / MB:>10.2f}MB")
    print(f"{'  store bytes after import':44} {store / MB:>10.2f}MB {lfs_bytes / MB:>10.2f}MB  ({store / lfs_bytes:.1%} of LFS)")
    print(f"{'coral -> LFS: export':44} {t_exp:>11.2f}s   same commit ids as the original: {same}")
    print(f"{'plain-git history -> migrate import':44} {t_coral_plain:>11.2f}s {t_lfs_plain:>11.2f}s")
    print(f"{'  store bytes':44} {coral_plain / MB:>10.2f}MB {lfs_plain / MB:>10.2f}MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
