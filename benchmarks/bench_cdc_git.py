"""A 1-byte insertion early in a large opaque file, through real git: coral-git (CDC) vs git-lfs.

Two commits of one random file (v2 = one byte inserted at offset 100), into a coral-git repository
and a git-lfs repository. Printed: what the second commit added to ``.git/coral`` / ``.git/lfs``
as a fraction of the file, the new chunks of the pointer, and the clean time of each commit.
Random bytes do not compress, so this is the worst case for coral's store.

Run: ``PYTHONPATH=$PWD python benchmarks/bench_cdc_git.py [--mb 200]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run(repo: Path, *args: str) -> str:
    return subprocess.run(args, cwd=repo, check=True, capture_output=True, text=True).stdout


def two_commits(repo: Path, kind: str, v1: bytes, v2: bytes) -> tuple[int, int, float, float, str, str]:
    repo.mkdir()
    run(repo, "git", "init", "-q")
    if kind == "coral":
        run(repo, "git", "coral", "init")
        run(repo, "git", "coral", "track", "*.dat")
    else:
        run(repo, "git", "lfs", "install", "--local")
        run(repo, "git", "lfs", "track", "*.dat")
    run(repo, "git", "add", ".gitattributes")
    run(repo, "git", "commit", "-qm", "init")
    store = repo / ".git" / ("coral" if kind == "coral" else "lfs")
    times, sizes, shown = [], [], []
    for i, data in enumerate((v1, v2)):
        (repo / "f.dat").write_bytes(data)
        t0 = time.perf_counter()
        run(repo, "git", "add", "f.dat")
        run(repo, "git", "commit", "-qm", f"v{i + 1}")
        times.append(time.perf_counter() - t0)
        sizes.append(du(store))
        shown.append(run(repo, "git", "show", "HEAD:f.dat"))
    return sizes[0], sizes[1], times[0], times[1], shown[0], shown[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    args = ap.parse_args()
    n = args.mb << 20
    v1 = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes()
    v2 = v1[:100] + b"!" + v1[100:]
    print(f"file: {args.mb} MiB random bytes; v2 = 1 byte inserted at offset 100; load: {os.getloadavg()[0]:.2f}")
    print(f"{'':8} {'after v1':>12} {'after v2':>12} {'v2 new':>9} {'clean v1':>9} {'clean v2':>9}")
    with tempfile.TemporaryDirectory() as d:
        for kind in ("coral", "lfs"):
            s1, s2, t1, t2, p1, p2 = two_commits(Path(d) / kind, kind, v1, v2)
            print(f"{kind:8} {s1:>12,} {s2:>12,} {(s2 - s1) / len(v2):>8.2%} {t1:>8.1f}s {t2:>8.1f}s")
            if kind == "coral":
                old = set(p1.split("\n")[3].split(" ")[2].split(","))
                new = p2.split("\n")[3].split(" ")[2].split(",")
                print(f"         pointer: {p2.split(chr(10))[2]}; {len(new)} skeleton chunks, "
                      f"{sum(c not in old for c in new)} new")  # fmt: skip


if __name__ == "__main__":
    main()
