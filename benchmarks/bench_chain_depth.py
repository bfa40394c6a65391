"""Old-version checkout speed against store size for the repacker's depth bound D (``coral.maxChain``).

An ``--mb`` MiB float32 model, ``--epochs`` training-like versions added and committed, then: the store as
adds leave it, after ``git coral gc --prune=now`` (the default D), and after ``git coral repack -f
--max-chain D`` for each of ``--depths``. For each: stored bytes and ``git coral smudge`` MB/s of the
oldest and the latest version written to a file (median of 3; direct checkout off, so every byte goes
through the smudge). Print the load with the figures: the machine is shared.

    python benchmarks/bench_chain_depth.py --mb 1024 --epochs 6 --depths 1 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).parent))
from bench_store_v2 import du, run, smudge_mbs, states


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--depths", type=int, nargs="*", default=[1, 3])
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-depth-"))
    try:
        repo = root / "r"
        repo.mkdir()
        run(repo, "git", "init", "-q", "-b", "main")
        run(repo, "git", "coral", "init")
        run(repo, "git", "config", "coral.gc.auto", "0")
        run(repo, "git", "add", ".gitattributes")
        run(repo, "git", "commit", "-qm", "init")
        for e, st in enumerate(states(args.mb, args.epochs)):
            save_file(st, str(repo / "model.safetensors"))
            run(repo, "git", "add", "model.safetensors")
            run(repo, "git", "commit", "-qm", f"epoch {e}")
        oldest = f"HEAD~{args.epochs - 1}"

        def row(label: str) -> None:
            print(f"{label:28} stored {du(repo / '.git' / 'coral') / 1e6:8.1f} MB   oldest "
                  f"{smudge_mbs(repo, oldest, 3, out=root / 'out'):5.0f} MB/s   latest {smudge_mbs(repo, 'HEAD', 3, out=root / 'out'):5.0f} MB/s",
                  flush=True)

        print(f"{args.epochs} versions of a {args.mb} MiB float32 model; load {os.getloadavg()[0]:.1f}")
        row("adds only")
        t = time.perf_counter()
        run(repo, "git", "coral", "gc", "--prune=now")
        row(f"gc, default D ({time.perf_counter() - t:.0f} s)")
        for d in args.depths:
            run(repo, "git", "coral", "repack", "-f", "--max-chain", str(d))
            row(f"repack -f --max-chain {d}")
        print(f"load {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
