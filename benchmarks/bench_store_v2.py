"""Store v2 figures side by side with git-lfs (and, optionally, another coral-git checkout) in one run.

For a training-like history (every weight nudged each epoch) of a synthetic float32 model:
store size after N epochs; after a deleted branch of N/2 more epochs + reflog expire + gc; checkout
seconds of the oldest / middle / latest version; smudge MB/s of the oldest version; add+commit per
version with automatic maintenance off (``coral.gc.auto=0``, the main branch) and on with a low
threshold (``--auto-objects``, the branch; background gcs are waited for before sizes are taken).
The branch gc (``git coral gc --prune=now``) also re-chooses delta bases, so checkout timings see the
repacked store. ``--smudge-mb N`` adds a separate run: ``--smudge-epochs`` versions of an N MiB model,
gc, then the smudge MB/s of its oldest version. Medians over ``--runs`` for the timings.

    python benchmarks/bench_store_v2.py --size-mb 32 --epochs 20 [--other /path/to/older/coral-git] [--smudge-mb 1024]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

ENV = {"GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}


def run(cwd: Path, *args: str, env: dict | None = None, stdin=None, stdout=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, check=True, env={**os.environ, **ENV, **(env or {})},
                          stdin=stdin, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE)


def states(size_mb: int, n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    width = 1024
    layers = max(1, size_mb * (1 << 20) // (width * width * 4))
    cur = {f"layers.{i}.weight": (rng.standard_normal((width, width)) * 0.02).astype(np.float32) for i in range(layers)}
    for _ in range(n):
        yield cur
        cur = {k: (v * (1 + rng.standard_normal(v.shape).astype(np.float32) * 1e-3)).astype(np.float32) for k, v in cur.items()}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def wait_gc(store: Path, timeout: float = 600) -> None:
    """Wait for a background ``gc --auto`` (it holds an flock on ``gc.pid``)."""
    import fcntl

    pid = store / "gc.pid"
    if not pid.exists():
        return
    with open(pid) as f:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
                return
            except OSError:
                time.sleep(0.2)


def smudge_mbs(repo: Path, rev: str, runs: int, env: dict | None = None, out: Path | None = None) -> float:
    """MB/s of ``git coral smudge`` of ``rev:model.safetensors`` (median of ``runs``), never through a direct
    checkout (past 512 MiB that hands back the pointer). With ``out`` the bytes go to that file and their
    count is checked; else to /dev/null."""
    pointer = run(repo, "git", "cat-file", "blob", f"{rev}:model.safetensors").stdout
    size = int(pointer.split(b"\n")[1].split()[1])
    full_env = {**os.environ, **(env or {}), "CORAL_DIRECTCHECKOUTSIZE": "0"}
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        with open(out if out is not None else os.devnull, "wb") as f:
            subprocess.run(["git", "coral", "smudge", "model.safetensors"], cwd=repo, input=pointer, stdout=f,
                           check=True, env=full_env)
        ts.append(time.perf_counter() - t)
        if out is not None:
            assert out.stat().st_size == size, "smudge wrote the wrong number of bytes"
    return size / statistics.median(ts) / 1e6


def smudge_oldest(kind: str, root: Path, args, pythonpath: str | None) -> dict:
    """Stored size and smudge MB/s of the oldest of ``--smudge-epochs`` versions of a big model, after gc."""
    env = {"PYTHONPATH": pythonpath} if pythonpath else {}
    repo = root / f"{kind}-big"
    repo.mkdir()
    run(repo, "git", "init", "-q", "-b", "main")
    run(repo, "git", "coral", "init", env=env)
    run(repo, "git", "add", ".gitattributes", env=env)
    run(repo, "git", "commit", "-qm", "init", env=env)
    model = repo / "model.safetensors"
    off = {**env, "CORAL_GC_AUTO": "0"}
    for e, st in enumerate(states(args.smudge_mb, args.smudge_epochs)):
        save_file(st, str(model))
        run(repo, "git", "add", "model.safetensors", env=off)
        run(repo, "git", "commit", "-qm", f"epoch {e}", env=off)
    t = time.perf_counter()
    run(repo, "git", "coral", "gc", "--prune=now", env=env)
    gc_s = time.perf_counter() - t
    out = {f"big: size after gc ({args.smudge_mb} MiB x {args.smudge_epochs})": du(repo / ".git" / "coral"),
           "big: gc seconds": gc_s}
    for name, rev in (("oldest", f"HEAD~{args.smudge_epochs - 1}"), ("latest", "HEAD")):
        out[f"big: smudge {name} MB/s"] = smudge_mbs(repo, rev, args.runs, env)
    shutil.rmtree(repo, ignore_errors=True)
    return out


def bench(kind: str, root: Path, args, pythonpath: str | None) -> dict:
    env = {"PYTHONPATH": pythonpath} if pythonpath else {}
    repo = root / kind
    repo.mkdir()
    run(repo, "git", "init", "-q", "-b", "main")
    if kind == "git-lfs":
        run(repo, "git", "lfs", "install", "--local")
        run(repo, "git", "lfs", "track", "*.safetensors")
        store = repo / ".git" / "lfs"
    else:
        run(repo, "git", "coral", "init", env=env)
        store = repo / ".git" / "coral"
    run(repo, "git", "add", ".gitattributes", env=env)
    run(repo, "git", "commit", "-qm", "init", env=env)
    all_states = list(states(args.size_mb, args.epochs + args.epochs // 2))
    adds = []
    model = repo / "model.safetensors"
    off = {**env, "CORAL_GC_AUTO": "0"}
    for e in range(args.epochs):
        save_file(all_states[e], str(model))
        t = time.perf_counter()
        run(repo, "git", "add", "model.safetensors", env=off)
        run(repo, "git", "commit", "-qm", f"epoch {e}", env=off)
        adds.append(time.perf_counter() - t)
    out = {"add+commit (auto off)": statistics.median(adds), "size": du(store)}
    run(repo, "git", "checkout", "-qb", "exp", env=env)
    on = {**env, "CORAL_GC_AUTO": str(args.auto_objects)}
    adds = []
    for e in range(args.epochs, len(all_states)):
        save_file(all_states[e], str(model))
        t = time.perf_counter()
        run(repo, "git", "add", "model.safetensors", env=on)
        run(repo, "git", "commit", "-qm", f"exp {e}", env=on)
        adds.append(time.perf_counter() - t)
    out["add+commit (auto on)"] = statistics.median(adds)
    wait_gc(store)
    out["size with branch"] = du(store)
    run(repo, "git", "checkout", "-q", "main", env=env)
    run(repo, "git", "branch", "-D", "exp", env=env)
    run(repo, "git", "reflog", "expire", "--expire=now", "--all", env=env)
    if kind == "git-lfs":
        run(repo, "git", "lfs", "prune", env=env)
    else:
        run(repo, "git", "coral", "gc", "--prune=now", env=env)
    out["size after branch gc"] = du(store)
    for name, rev in (("oldest", f"HEAD~{args.epochs - 1}"), ("middle", f"HEAD~{args.epochs // 2}"), ("latest", "HEAD")):
        ts = []
        for _ in range(args.runs):
            model.unlink()
            t = time.perf_counter()
            run(repo, "git", "checkout", rev, "--", "model.safetensors", env=env)
            ts.append(time.perf_counter() - t)
        out[f"checkout {name}"] = statistics.median(ts)
    if kind != "git-lfs":
        out["smudge oldest MB/s"] = smudge_mbs(repo, f"HEAD~{args.epochs - 1}", args.runs, env)
    run(repo, "git", "checkout", "-q", "HEAD", "--", "model.safetensors", env=env)
    if args.smudge_mb and kind != "git-lfs":
        shutil.rmtree(repo, ignore_errors=True)
        out.update(smudge_oldest(kind, root, args, pythonpath))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--auto-objects", type=int, default=64, help="coral.gc.auto while the branch is committed")
    ap.add_argument("--smudge-mb", type=int, default=0, help="also time smudging the oldest version of a model this big")
    ap.add_argument("--smudge-epochs", type=int, default=6)
    ap.add_argument("--other", help="another coral-git checkout to compare with (put first on PYTHONPATH)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-store-v2-"))
    try:
        rows = {"git-lfs": bench("git-lfs", root, args, None), "coral-git": bench("coral-git", root, args, None)}
        if args.other:
            rows["coral-git (other)"] = bench("coral-git-other", root, args, args.other)
        print(f"loadavg {Path('/proc/loadavg').read_text().strip()}")
        print(f"{args.epochs} epochs of a {args.size_mb} MiB float32 model (+ a deleted {args.epochs // 2}-epoch branch); "
              f"load {os.getloadavg()[0]:.1f}; medians of {args.runs}")
        keys = list(dict.fromkeys(k for r in rows.values() for k in r))
        print(f"{'':24}" + "".join(f"{k:>22}" for k in rows))
        lfs = rows["git-lfs"]
        for k in keys:
            cells = []
            for r in rows.values():
                v = r.get(k)
                if v is None:
                    cells.append(f"{'-':>22}")
                elif "size" in k:
                    ratio = f" ({v / lfs[k]:.2f}x)" if lfs.get(k) else ""
                    cells.append(f"{v / 1e6:>12.1f} MB{ratio:>8}")
                elif "MB/s" in k or k.endswith("seconds"):
                    cells.append(f"{v:>22.0f}")
                else:
                    ratio = f" ({v / lfs[k]:.2f}x)" if lfs.get(k) else ""
                    cells.append(f"{v:>13.3f}s{ratio:>8}")
            print(f"{k:24}" + "".join(cells))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
