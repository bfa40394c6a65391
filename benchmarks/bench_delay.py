#!/usr/bin/env python3
"""Parallel checkout: ``git clone`` of a repository of ``--shards`` safetensors shards (``--mib`` MiB
each) from a local bare repository (chunks in its ``coral/`` store), with the filter's ``delay``
capability on (default) and off (``CORAL_NO_DELAY=1``). Reports wall seconds and CPU seconds of the
clone (children included): CPU > wall means more than one core was used.

Units: MB = 10^6 bytes. Progress on stderr, the report on stdout.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as bc


def make_shards(repo: Path, shards: int, mib: float) -> dict[str, str]:
    rng = np.random.default_rng(0)
    per = int(mib * 2**20) // 4 // 8
    out = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        tensors = {f"layer{j}.weight": (rng.standard_normal(per, dtype=np.float32) * 0.02) for j in range(8)}
        save_file(tensors, str(repo / name))
        out[name] = bc.sha256_file(repo / name)
    return out


def timed_clone(work: Path, bare: Path, dest: Path, extra_env: dict[str, str]) -> tuple[float, float]:
    env = {**bc.GIT_ENV, **extra_env}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["git", "clone", "-q", str(bare), str(dest)], cwd=work, env=env, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--mib", type=float, default=32)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-delay-", dir=args.workdir))
    try:
        bc.setup_git_env(work)
        bc.git(work, "coral", "init", "--global")
        repo, bare = work / "repo", work / "shared.git"
        bc.init_repo(repo, "coral", [])
        bc.log(f"writing {args.shards} shards of {args.mib:.0f} MiB")
        shas = make_shards(repo, args.shards, args.mib)
        bc.git(repo, "add", ".")
        bc.git(repo, "commit", "-qm", "shards")
        bc.git(work, "init", "-q", "--bare", str(bare))
        bc.git(repo, "remote", "add", "origin", str(bare))
        bc.git(repo, "push", "-q", "origin", "HEAD:main")
        rows = []
        for label, env in (("delay off (CORAL_NO_DELAY=1)", {"CORAL_NO_DELAY": "1"}), ("delay on (default)", {})):
            dest = work / "clone"
            bc.log(f"clone, {label}")
            wall, cpu = timed_clone(work, bare, dest, env)
            assert all(bc.sha256_file(dest / n) == s for n, s in shas.items()), "clone not byte-exact"
            rows.append((label, wall, cpu))
            shutil.rmtree(dest)
        total = sum((repo / n).stat().st_size for n in shas) / 1e6
        print(f"# clone of {args.shards} shards x {args.mib:.0f} MiB ({total:.0f} MB) from a local bare repository; "
              f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        print("| checkout | wall s | CPU s | CPU/wall |")
        print("| --- | ---: | ---: | ---: |")
        for label, wall, cpu in rows:
            print(f"| {label} | {wall:.1f} | {cpu:.1f} | {cpu / wall:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
