#!/usr/bin/env python3
"""Cost of a tensor-aware diff against a full checkout of the same file.

A synthetic safetensors model (default 128 float32 tensors of 2048×1024 = 1 GiB) is committed,
then 10% of its tensors are nudged (``w += 1e-3·N(0,1)·|w|``) and committed again. Measured, each
as the median of ``--runs`` runs, wall time and peak RSS of the process tree:

* ``smudge``            ``git coral smudge`` of the new version (the full decode a checkout pays);
* ``decode changed``    decoding just the chunks of the changed tensors, old and new (the target);
* ``git coral diff``    ``git coral diff HEAD~1 HEAD`` (pointers from blobs, stats streamed);
* ``git diff``          ``git diff HEAD~1 HEAD`` through diff.coral.command (git first smudges
                        the old side into a temp file, then runs the driver);
* ``git diff (wt)``     ``git diff`` with the changed version in the work tree and the old one in the
                        index (git smudges the index side, the driver hashes the working file).

Run: ``python benchmarks/bench_diff.py [--tensors 128] [--runs 3] [--keep]``.
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
import time
from pathlib import Path

import numpy as np

ENV = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@example.com", "GIT_CONFIG_NOSYSTEM": "1",
}  # fmt: skip


def run(cmd: list[str], cwd: Path, stdin: Path | None = None) -> tuple[float, int]:
    """(seconds, peak RSS in bytes over the process tree) of one command.

    Measured through /usr/bin/time (a small parent), because a child forked from this process
    would report this process's own RSS as its starting high-water mark.
    """
    fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, stdin=fin, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, env={**os.environ, **ENV})  # fmt: skip
    dt = time.perf_counter() - t0
    if stdin:
        fin.close()  # type: ignore[union-attr]
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err}")
    return dt, int(err[-1]) * 1024


def write_model(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, off = {}, 0
    for k, v in tensors.items():
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + v.nbytes]}
        off += v.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for v in tensors.values():
            f.write(v.tobytes())


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env={**os.environ, **ENV}).stdout.decode()


def median(xs: list[tuple[float, int]]) -> tuple[float, int]:
    return statistics.median(x[0] for x in xs), int(statistics.median(x[1] for x in xs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tensors", type=int, default=128, help="number of 2048×1024 float32 tensors (8 MiB each)")
    ap.add_argument("--changed", type=float, default=0.10, help="fraction of tensors changed")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-diff-"))
    repo = root / "repo"
    repo.mkdir()
    try:
        git(repo, "init", "-q")
        subprocess.run(["git", "coral", "init"], cwd=repo, check=True, capture_output=True)
        rng = np.random.default_rng(0)
        names = [f"layers.{i}.weight" for i in range(args.tensors)]
        state = {n: (rng.standard_normal((2048, 1024)) * 0.02).astype(np.float32) for n in names}
        model = repo / "model.safetensors"
        write_model(model, state)
        size = model.stat().st_size
        t0 = time.perf_counter()
        git(repo, "add", "model.safetensors", ".gitattributes")
        git(repo, "commit", "-qm", "v1")
        add1 = time.perf_counter() - t0
        k = max(1, round(args.changed * len(names)))
        changed = list(rng.choice(len(names), size=k, replace=False))
        for i in changed:
            w = state[names[i]]
            state[names[i]] = (w + 1e-3 * rng.standard_normal(w.shape).astype(np.float32) * np.abs(w)).astype(np.float32)
        write_model(model, state)
        del state
        t0 = time.perf_counter()
        git(repo, "add", "model.safetensors")
        git(repo, "commit", "-qm", "v2")
        add2 = time.perf_counter() - t0
        print(f"model: {size / 1e9:.3f} GB, {len(names)} tensors, {k} changed; git add+commit v1 {add1:.1f} s, v2 {add2:.1f} s", flush=True)

        pointer = root / "pointer"
        pointer.write_bytes(subprocess.run(["git", "cat-file", "blob", "HEAD:model.safetensors"], cwd=repo, check=True, capture_output=True).stdout)
        decode = (
            "import sys, time\n"
            "from coral_git.git.repo import find_repo\nfrom coral_git.core.pointer import parse\nfrom coral_git.filter.smudge import decoded_chunks\n"
            "r = find_repo(); s = r.store\n"
            "import subprocess\n"
            "a = parse(subprocess.run(['git','cat-file','blob','HEAD~1:model.safetensors'],capture_output=True).stdout)\n"
            "b = parse(subprocess.run(['git','cat-file','blob','HEAD:model.safetensors'],capture_output=True).stdout)\n"
            "old = {t.name: t for t in a.tensors}\n"
            "ids = [(c, 'x') for t in b.tensors if t.chunks != old[t.name].chunks for c in old[t.name].chunks + t.chunks]\n"
            "for _ in decoded_chunks(s, ids, '', r.workers): pass\n"
        )
        cases: dict[str, tuple[list[str], Path | None]] = {
            "smudge (full checkout)": (["git", "coral", "smudge", "model.safetensors"], pointer),
            "decode changed only": ([sys.executable, "-c", decode], None),
            "git coral diff HEAD~1 HEAD": (["git", "coral", "diff", "HEAD~1", "HEAD"], None),
            "git diff HEAD~1 HEAD": (["git", "diff", "HEAD~1", "HEAD"], None),
        }
        results: dict[str, tuple[float, int]] = {}
        for label, (cmd, stdin) in cases.items():
            results[label] = median([run(cmd, repo, stdin) for _ in range(args.runs)])
            print(f"  {label:<28} {results[label][0]:7.2f} s   peak RSS {results[label][1] / 1e6:7.0f} MB", flush=True)
        # work tree vs index: old version in the index, new in the work tree
        git(repo, "reset", "-q", "--soft", "HEAD~1")
        git(repo, "restore", "--staged", "model.safetensors")
        label = "git diff (work tree vs index)"
        results[label] = median([run(["git", "diff"], repo) for _ in range(args.runs)])
        print(f"  {label:<28} {results[label][0]:7.2f} s   peak RSS {results[label][1] / 1e6:7.0f} MB", flush=True)
        base = results["smudge (full checkout)"][0]
        print("ratios to a full smudge (time): " + ", ".join(f"{k} {v[0] / base:.2f}" for k, v in results.items()))
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
