"""Store lifecycle benchmark: gc, packing and checkout from packs vs loose objects.

Builds a repository of ``--versions`` checkpoint versions of a small safetensors model (one commit
each, some layers frozen as in fine-tuning) plus a side branch of ``--side`` versions that is then
deleted (its reflog expired), and measures:

- ``git coral gc --prune=now``: wall time (median over ``--runs`` copies of the repository), objects
  and store files before and after;
- store file count before and after packing;
- ``git checkout`` of several revisions with the model deleted first (so it is really smudged),
  from loose objects and from packs, alternating runs, medians reported;
- ``git coral fsck`` and ``git coral stats`` times on the packed store.

Run: ``python benchmarks/bench_store.py`` (``--quick`` for a smoke run). Figures go to stdout.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def sh(cwd: Path, *args: str, env: dict[str, str]) -> str:
    p = subprocess.run(list(args), cwd=cwd, capture_output=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {p.stderr.decode(errors='replace')}")
    return p.stdout.decode(errors="replace")


def timed(cwd: Path, *args: str, env: dict[str, str]) -> float:
    t = time.perf_counter()
    sh(cwd, *args, env=env)
    return time.perf_counter() - t


def store_counts(repo: Path) -> tuple[int, int, int]:
    """(files under coral/objects + coral/packs, bytes, loose objects)."""
    root = repo / ".git" / "coral"
    files = size = loose = 0
    for sub in ("objects", "packs"):
        for d, _, fs in os.walk(root / sub):
            for f in fs:
                files += 1
                size += os.path.getsize(os.path.join(d, f))
                loose += sub == "objects"
    return files, size, loose


def state(rng: np.random.Generator, layers: int, width: int) -> dict[str, np.ndarray]:
    out = {}
    for i in range(layers):
        out[f"layers.{i}.weight"] = (rng.standard_normal((width, width)) * 0.02).astype(np.float32)
        out[f"layers.{i}.bias"] = np.zeros(width, np.float32)
    out["head.weight"] = (rng.standard_normal((10, width)) * 0.02).astype(np.float32)
    return out


def step(s: dict[str, np.ndarray], rng: np.random.Generator, frozen: int) -> dict[str, np.ndarray]:
    """One 'epoch': every tensor but the first ``frozen`` layers nudged by relative noise."""
    out = {}
    for k, v in s.items():
        if k.startswith("layers.") and int(k.split(".")[1]) < frozen:
            out[k] = v
        else:
            out[k] = (v * (1 + rng.standard_normal(v.shape).astype(np.float32) * 1e-3)).astype(np.float32)
    return out


def smudge_all(repo: Path, revs: list[str], env: dict[str, str]) -> float:
    """Seconds to rebuild ``model.safetensors`` at each of ``revs`` through the library, in-process."""
    from coral_git.core import pointer as ptr
    from coral_git.filter.smudge import smudge
    from coral_git.git.repo import find_repo

    pointers = [ptr.parse(sh(repo, "git", "show", f"{rev}:model.safetensors", env=env).encode()) for rev in revs]
    store = find_repo(repo).store  # a fresh store: nothing cached from an earlier run
    sink = bytearray()
    t = time.perf_counter()
    for p in pointers:
        sink.clear()
        smudge(p, store, sink.extend, workers=2)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", type=int, default=100)
    ap.add_argument("--side", type=int, default=20)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--frozen", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=65536, help="coral.chunkSize (small, to get many objects)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--checkouts", type=int, default=5, help="revisions checked out per run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work dir (printed on stderr)")
    args = ap.parse_args()
    if args.quick:
        args.versions, args.side, args.runs, args.checkouts = 12, 4, 2, 3
    from safetensors.numpy import save_file

    work = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.workdir))
    cfg = work / "gitconfig"
    cfg.write_text("[user]\n\tname = bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n"
                   "[advice]\n\tdetachedHead = false\n[gc]\n\tauto = 0\n")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": str(cfg), "GIT_CONFIG_NOSYSTEM": "1"}
    try:
        repo = work / "repo"
        repo.mkdir()
        sh(repo, "git", "init", "-q", env=env)
        sh(repo, "git", "coral", "init", env=env)
        sh(repo, "git", "config", "coral.chunkSize", str(args.chunk), env=env)
        sh(repo, "git", "add", ".gitattributes", env=env)
        sh(repo, "git", "commit", "-qm", "init", env=env)
        rng = np.random.default_rng(0)
        s = state(rng, args.layers, args.width)
        digests: dict[str, str] = {}
        t0 = time.perf_counter()
        model = repo / "model.safetensors"
        for v in range(args.versions):
            save_file(s, str(model))
            sh(repo, "git", "add", "model.safetensors", env=env)
            sh(repo, "git", "commit", "-qm", f"epoch {v}", env=env)
            digests[f"HEAD~{args.versions - 1 - v}"] = hashlib.sha256(model.read_bytes()).hexdigest()
            if v == args.versions // 2:
                side_from = sh(repo, "git", "rev-parse", "HEAD", env=env).strip()
                side_state = s
            s = step(s, rng, args.frozen)
            print(f"\rcommitted {v + 1}/{args.versions}", end="", file=sys.stderr)
        build = time.perf_counter() - t0
        sh(repo, "git", "checkout", "-qb", "side", side_from, env=env)
        for v in range(args.side):
            side_state = step(side_state, rng, 0)
            save_file(side_state, str(model))
            sh(repo, "git", "add", "model.safetensors", env=env)
            sh(repo, "git", "commit", "-qm", f"side {v}", env=env)
        sh(repo, "git", "checkout", "-q", "main", env=env)
        sh(repo, "git", "branch", "-D", "side", env=env)
        sh(repo, "git", "reflog", "expire", "--expire=now", "--all", env=env)
        print(file=sys.stderr)
        model_bytes = model.stat().st_size
        files0, bytes0, _ = store_counts(repo)

        # gc on copies, so each run starts from the same loose store
        gc_times, after = [], None
        for k in range(args.runs):
            copy = work / f"gc{k}"
            shutil.copytree(repo, copy, symlinks=True)
            gc_times.append(timed(copy, "git", "coral", "gc", "--prune=now", env=env))
            after = store_counts(copy)
        packed = work / "gc0"
        loose = work / "loose"
        shutil.copytree(repo, loose, symlinks=True)
        sh(loose, "git", "coral", "gc", "--prune=now", "--no-pack", env=env)
        loose_counts = store_counts(loose)
        objects_after = int(sh(packed, "git", "coral", "stats", "--json", env=env).split('"objects": ')[1].split(",")[0])
        objects_before = files0  # every object was a loose file before gc

        # checkout: the same revisions from loose objects and from packs, alternating
        revs = [f"HEAD~{round(i * (args.versions - 1) / max(1, args.checkouts - 1))}" for i in range(args.checkouts)]
        co = {"loose": [], "packed": []}
        for _ in range(args.runs):
            for name, r in (("loose", loose), ("packed", packed)):
                for rev in revs:
                    (r / "model.safetensors").unlink(missing_ok=True)
                    co[name].append(timed(r, "git", "checkout", "-q", rev, "--", "model.safetensors", env=env))
                    got = hashlib.sha256((r / "model.safetensors").read_bytes()).hexdigest()
                    if got != digests[rev]:
                        raise SystemExit(f"{name}: {rev} checked out wrong bytes")
        # the same, in-process: smudge of each pointer with no process start-up in the figure
        smudge_t = {"loose": [], "packed": []}
        for _ in range(args.runs):
            for name, r in (("loose", loose), ("packed", packed)):
                smudge_t[name].append(smudge_all(r, revs, env))
        fsck_t = statistics.median(timed(packed, "git", "coral", "fsck", env=env) for _ in range(args.runs))
        stats_t = statistics.median(timed(packed, "git", "coral", "stats", env=env) for _ in range(args.runs))
        start_t = statistics.median(timed(packed, "git", "coral", "version", env=env) for _ in range(args.runs))

        print(f"repository: {args.versions} versions on main + {args.side} on a deleted branch, "
              f"model {model_bytes / 1e6:.2f} MB, coral.chunkSize {args.chunk}; built in {build:.0f} s")
        print(f"{'figure':<42} {'value':>14}")
        rows = [
            ("objects before gc", f"{objects_before}"),
            ("objects after gc --prune=now", f"{objects_after}"),
            ("store files before (loose)", f"{files0}"),
            ("store files after gc --no-pack", f"{loose_counts[0]}"),
            ("store files after gc (packed)", f"{after[0]}"),
            ("store bytes before / after", f"{bytes0 / 1e6:.2f} / {after[1] / 1e6:.2f} MB"),
            (f"gc --prune=now time (median of {args.runs})", f"{statistics.median(gc_times):.2f} s"),
            ("  all gc runs", " ".join(f"{t:.2f}" for t in gc_times)),
            ("git coral start-up (version)", f"{start_t:.2f} s"),
            (f"checkout from loose (median of {len(co['loose'])})", f"{statistics.median(co['loose']):.3f} s"),
            (f"checkout from packs (median of {len(co['packed'])})", f"{statistics.median(co['packed']):.3f} s"),
            ("packs / loose checkout ratio", f"{statistics.median(co['packed']) / statistics.median(co['loose']):.2f}"),
            (f"in-process smudge of {len(revs)} revs, loose", f"{statistics.median(smudge_t['loose']):.3f} s"),
            (f"in-process smudge of {len(revs)} revs, packs", f"{statistics.median(smudge_t['packed']):.3f} s"),
            ("packs / loose smudge ratio", f"{statistics.median(smudge_t['packed']) / statistics.median(smudge_t['loose']):.2f}"),
            ("fsck on packed store", f"{fsck_t:.2f} s"),
            ("stats on packed store", f"{stats_t:.2f} s"),
        ]
        for k, v in rows:
            print(f"{k:<42} {v:>14}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
