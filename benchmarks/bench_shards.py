"""Sharded checkpoints: bytes a re-shard and a re-shard + fine-tune step add, coral-git vs git-lfs.

    PYTHONPATH=$PWD python benchmarks/bench_shards.py [--layers 12 --width 1024]

A model of ``layers`` × (width × width) float32 weights is saved as 3 shards plus the HF index and
committed; then (1) re-sharded into 2 shards with the same tensors, (2) one tensor in 1% of its rows
changed and re-sharded back into 3 with the local recent-tensor table removed (as after a clone), so
only the shard index can find the moved tensor's previous version. Figures: bytes each commit added
(git objects + lfs objects + coral store), and the time of ``git coral diff HEAD~1 HEAD``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

INDEX = "model.safetensors.index.json"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def size(repo: Path) -> int:
    g = repo / ".git"
    return sum(p.stat().st_size for d in ("objects", "lfs", "coral/objects", "coral/packs") for p in (g / d).rglob("*") if p.is_file())


def write(repo: Path, state: dict[str, np.ndarray], n: int) -> None:
    for old in repo.glob("model-*-of-*.safetensors"):
        old.unlink()
    names, wm = list(state), {}
    for k in range(n):
        part = names[k * len(names) // n : (k + 1) * len(names) // n]
        fname = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        save_file({t: state[t] for t in part}, str(repo / fname), metadata={"format": "pt"})
        wm.update(dict.fromkeys(part, fname))
    (repo / INDEX).write_text(json.dumps({"metadata": {"total_size": sum(v.nbytes for v in state.values())}, "weight_map": wm}))


def commit(repo: Path, msg: str) -> int:
    before = size(repo)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", msg)
    return size(repo) - before


def run(setup: str, root: Path, state: dict[str, np.ndarray], tuned: dict[str, np.ndarray]) -> dict[str, float]:
    repo = root / setup
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "b@example.com")
    git(repo, "config", "user.name", "bench")
    if setup == "lfs":
        git(repo, "lfs", "install", "--local")
        git(repo, "lfs", "track", "*.safetensors")
    else:
        git(repo, "coral", "init")
    git(repo, "add", ".gitattributes")
    git(repo, "commit", "-qm", "init")
    write(repo, state, 3)
    out = {"first (3 shards)": commit(repo, "3 shards")}
    write(repo, state, 2)
    out["re-shard 3→2"] = commit(repo, "2 shards")
    if setup == "coral":
        shutil.rmtree(repo / ".git" / "coral" / "recent", ignore_errors=True)
    write(repo, tuned, 3)
    out["tune 1 tensor + re-shard 2→3"] = commit(repo, "tuned, 3 shards")
    if setup == "coral":
        t = time.perf_counter()
        git(repo, "coral", "diff", "HEAD~2", "HEAD~1", "--json")
        out["git coral diff (re-shard) s"] = time.perf_counter() - t
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=1024)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    state = {f"layers.{i}.weight": (rng.standard_normal((a.width, a.width)) * 0.02).astype(np.float32) for i in range(a.layers)}
    tuned = {k: v.copy() for k, v in state.items()}
    name = f"layers.{a.layers // 2}.weight"  # in shard 2 of 2, then in shard 2 of 3
    tuned[name][: max(1, a.width // 100)] *= 1.01
    total = sum(v.nbytes for v in state.values())
    print(f"model: {a.layers} × [{a.width},{a.width}] F32 = {total / 1e6:.1f} MB; changed: {name}, {max(1, a.width // 100)} rows")
    with tempfile.TemporaryDirectory() as tmp:
        res = {s: run(s, Path(tmp), state, tuned) for s in ("lfs", "coral")}
    print(f"{'step':<32} {'git-lfs':>12} {'coral-git':>12} {'ratio':>8}")
    for k in res["lfs"]:
        lf, co = res["lfs"][k], res["coral"][k]
        print(f"{k:<32} {lf / 1e6:>10.3f}MB {co / 1e6:>10.3f}MB {co / lf if lf else float('nan'):>8.4f}")
    print(f"{'git coral diff (re-shard)':<32} {'':>12} {res['coral']['git coral diff (re-shard) s']:>11.2f}s")
    print(f"load: {os.getloadavg()}")


if __name__ == "__main__":
    main()
