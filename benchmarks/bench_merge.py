#!/usr/bin/env python3
"""Merge benchmark: ``git merge`` of two ~1 GB model branches where 50% of the tensors differ.

A base safetensors model (float32, 16 MiB tensors, ``--size-gb`` in total) is committed; two
branches each fine-tune the same half of the tensors differently (so half of the tensors are
changed on both sides and are averaged, the other half are unchanged). The merge runs with
``CORAL_MERGE_STRATEGY=average``. Every run uses fresh branches (new seeds), so no merged chunk
is in the store beforehand.

Figures per run:
* ``git merge`` wall time (driver + writing the merged file into the work tree);
* the merge driver alone: wall time, peak RSS and peak anonymous RSS (sampled every 10 ms from
  /proc; the rest of RSS is the page cache of the memory-mapped merged file);
* baseline, same data: a naive in-memory merge (``safetensors.numpy.load_file`` both sides,
  average, ``save_file``), wall time and peak RSS.

Medians over ``--runs`` runs are printed. Everything happens under a temporary directory that is
removed at the end unless ``--keep``. Units: MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

MB = 1e6
ROWS, COLS = 4096, 1024  # 16 MiB of float32 per tensor
NAME = "model.safetensors"


def write_model(path: Path, n: int, seed: int | None, changed: set[int]) -> None:
    """Stream a safetensors file of ``n`` tensors; tensors in ``changed`` get seed-specific noise."""
    nbytes = ROWS * COLS * 4
    header = {f"layers.{i}.weight": {"dtype": "F32", "shape": [ROWS, COLS], "data_offsets": [i * nbytes, (i + 1) * nbytes]} for i in range(n)}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for i in range(n):
            w = np.random.default_rng(i).standard_normal((ROWS, COLS), dtype=np.float32) * np.float32(0.02)
            if seed is not None and i in changed:
                w += np.random.default_rng((seed, i)).standard_normal((ROWS, COLS), dtype=np.float32) * np.float32(1e-3)
            f.write(w.tobytes())


def git(cwd: Path, *args: str, env: dict | None = None) -> str:
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, env={**os.environ, **(env or {})})
    if p.returncode:
        raise SystemExit(f"git {' '.join(args)} failed: {p.stderr.decode()[-500:]}")
    return p.stdout.decode()


def measured(cmd: list[str], cwd: Path, env: dict | None = None) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (rusage) and peak anonymous RSS (sampled) of the process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak_anon = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak_anon
        while not stop.is_set():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("RssAnon:"):
                        peak_anon = max(peak_anon, int(line.split()[1]) * 1024)
            except (OSError, ValueError):
                pass
            stop.wait(0.01)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    err = proc.stderr.read().decode() if proc.stderr else ""
    return {"seconds": wall, "peak_rss": usage.ru_maxrss * 1024, "peak_anon": peak_anon, "status": status, "stderr": err}


NAIVE = """
import sys, numpy as np
from safetensors.numpy import load_file, save_file
o, t = load_file(sys.argv[1]), load_file(sys.argv[2])
out = {k: (np.float32(0.5) * o[k] + np.float32(0.5) * t[k]) if not np.array_equal(o[k], t[k]) else o[k] for k in o}
save_file(out, sys.argv[3])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gb", type=float, default=1.0, help="model size in GB (default 1.0)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    n = max(2, round(args.size_gb * 1e9 / (ROWS * COLS * 4)))
    changed = set(range(0, n, 2))  # 50% of the tensors
    work = Path(tempfile.mkdtemp(prefix="coral-bench-merge-", dir=args.workdir))
    cfg = work / "gitconfig"
    cfg.write_text("[user]\n\tname = bench\n\temail = bench@example.com\n[init]\n\tdefaultBranch = main\n")
    os.environ.update({"GIT_CONFIG_GLOBAL": str(cfg), "GIT_CONFIG_NOSYSTEM": "1"})
    repo = work / "repo"
    repo.mkdir()
    try:
        git(repo, "init", "-q")
        subprocess.run(["git", "coral", "init"], cwd=repo, check=True, capture_output=True)
        write_model(repo / NAME, n, None, changed)
        size = (repo / NAME).stat().st_size
        git(repo, "add", ".gitattributes", NAME)
        git(repo, "commit", "-qm", "base")
        print(f"model: {n} float32 tensors, {size / MB:.0f} MB; {len(changed)} tensors changed on both branches", file=sys.stderr)
        rows = []
        for r in range(args.runs):
            git(repo, "checkout", "-qB", f"theirs{r}", "main")
            write_model(repo / NAME, n, 2000 + r, changed)
            git(repo, "commit", "-qam", "theirs")
            theirs_copy = work / "theirs.safetensors"
            shutil.copyfile(repo / NAME, theirs_copy)
            git(repo, "checkout", "-qB", f"ours{r}", "main")
            write_model(repo / NAME, n, 1000 + r, changed)
            git(repo, "commit", "-qam", "ours")
            # the driver alone, on pointer files exactly as git hands them over
            tmp = work / "driver"
            tmp.mkdir(exist_ok=True)
            for side, rev in (("O", "main"), ("A", f"ours{r}"), ("B", f"theirs{r}")):
                (tmp / side).write_bytes(subprocess.run(["git", "cat-file", "blob", f"{rev}:{NAME}"], cwd=repo, capture_output=True, check=True).stdout)
            env = {"CORAL_MERGE_STRATEGY": "average"}
            drv = measured(["git-coral", "merge-driver", str(tmp / "O"), str(tmp / "A"), str(tmp / "B"), NAME], repo, env)
            if drv["status"]:
                raise SystemExit(f"driver failed: {drv['stderr']}")
            # the whole git merge (its driver finds the merged chunks already stored: warm)
            t0 = time.perf_counter()
            git(repo, "merge", "-q", "-m", "merge", f"theirs{r}", env=env)
            merge_s = time.perf_counter() - t0
            naive = measured([sys.executable, "-c", NAIVE, str(repo / NAME), str(theirs_copy), str(work / "naive.safetensors")], work)
            # cold git merge: fresh branches again would double the setup; instead redo the merge with a new alpha
            git(repo, "reset", "-q", "--hard", "HEAD~1")
            t0 = time.perf_counter()
            git(repo, "merge", "-q", "-m", "merge", f"theirs{r}", env={"CORAL_MERGE_STRATEGY": f"weighted:{0.5 + 1e-3 * (r + 1)}"})
            cold_s = time.perf_counter() - t0
            row = {
                "driver_s": drv["seconds"],
                "driver_peak_rss_mb": drv["peak_rss"] / MB,
                "driver_peak_anon_mb": drv["peak_anon"] / MB,
                "git_merge_warm_s": merge_s,
                "git_merge_cold_s": cold_s,
                "naive_s": naive["seconds"],
                "naive_peak_rss_mb": naive["peak_rss"] / MB,
            }
            rows.append(row)
            print(f"run {r + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in row.items()), file=sys.stderr)
            git(repo, "checkout", "-q", "main")
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        print(f"\nmerge of two {size / MB:.0f} MB branches, {len(changed)}/{n} tensors averaged, median of {len(rows)} runs")
        print(f"  coral merge driver        {med['driver_s']:7.2f} s   peak RSS {med['driver_peak_rss_mb']:7.0f} MB   (anonymous {med['driver_peak_anon_mb']:.0f} MB)")
        print(f"  git merge (cold, weighted) {med['git_merge_cold_s']:6.2f} s   (driver + smudge into the work tree)")
        print(f"  git merge (warm, average) {med['git_merge_warm_s']:7.2f} s")
        print(f"  naive in-memory baseline  {med['naive_s']:7.2f} s   peak RSS {med['naive_peak_rss_mb']:7.0f} MB")
        print(f"  driver / naive: time {med['driver_s'] / med['naive_s']:.2f}x, peak RSS {med['driver_peak_rss_mb'] / med['naive_peak_rss_mb']:.2f}x, anonymous {med['driver_peak_anon_mb'] / med['naive_peak_rss_mb']:.2f}x")
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
