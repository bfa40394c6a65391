"""Adds: the base chosen for fine-tunes at new paths, clean speed of a new version, start-up per git command.

Side by side with git-lfs, one run on this machine (print ``uptime`` with the figures: the VM is shared).

1. New paths: a base model (two unrelated base models with ``--bases 2``) committed, then fine-tunes of
   it (base + small independent noise) added as new files ``ft/variant_K.safetensors`` one after the
   other, each committed. Store growth for the fine-tunes with ``coral.baseCandidates=1`` (the most
   recently stored version only, the behaviour before base choice), with the default (trial among
   candidates), and git-lfs.
2. Clean of a new version of a ``--size-mb`` model (``git add`` wall time after the previous version
   is committed), coral vs git-lfs; then checkout of that latest version (file removed, ``git
   checkout -- file``) and, for coral, ``git coral smudge`` of its pointer to /dev/null.
3. Start-up: ``git add`` + ``git commit`` of a fresh 4 MB checkpoint, median of ``--runs``.
4. Smudge of the latest (``--only smudge``): v1 and v2 of a ``--size-mb`` model added and committed,
   then the median of ``--runs`` ``git coral smudge`` of HEAD's pointer (to /dev/null, never a direct
   checkout) and of ``git checkout -- model.safetensors`` (the file removed first; a direct checkout
   above ``coral.directCheckoutSize``), twice: as the add left the store (automatic gc held off: v2 as
   loose deltas on v1's keyframes) and after ``git coral gc --auto`` (what the background gc makes of it,
   waited for here instead of racing the timings). Each line says what the latest version's objects are.

    python benchmarks/bench_adds.py --ft 5 --ft-mb 16 --size-mb 256 --runs 5
    python benchmarks/bench_adds.py --only smudge --size-mb 1024 --runs 3
"""

from __future__ import annotations

import argparse
import compileall
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


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, check=True, env={**os.environ, **ENV}, capture_output=True)


def cpu() -> float:
    """CPU seconds (user + sys) of the finished child processes so far: git and the filters it ran.
    On a shared machine wall time swings with the load; this does much less."""
    t = os.times()
    return t.children_user + t.children_system


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def new_repo(root: Path, kind: str, **config: str) -> tuple[Path, Path]:
    """A repository tracking *.safetensors with coral or git-lfs; returns (repo, its store dir)."""
    root.mkdir(parents=True)
    run(root, "git", "init", "-q", "-b", "main")
    if kind == "git-lfs":
        run(root, "git", "lfs", "install", "--local")
        run(root, "git", "lfs", "track", "*.safetensors")
        store = root / ".git" / "lfs"
    else:
        run(root, "git", "coral", "init")
        store = root / ".git" / "coral"
    for k, v in config.items():
        run(root, "git", "config", k, v)
    run(root, "git", "add", ".gitattributes")
    run(root, "git", "commit", "-qm", "init")
    return root, store


def model(size_mb: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = 512
    layers = max(1, size_mb * (1 << 20) // (width * width * 4))
    return {f"layers.{i}.weight": (rng.standard_normal((width, width)) * 0.02).astype(np.float32) for i in range(layers)}


def finetune(base: dict[str, np.ndarray], seed: int, scale: float = 1e-3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v * (1 + rng.standard_normal(v.shape).astype(np.float32) * scale)).astype(np.float32) for k, v in base.items()}


def add_commit(repo: Path, rel: str, state: dict[str, np.ndarray]) -> float:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    t = time.perf_counter()
    run(repo, "git", "add", rel)
    run(repo, "git", "commit", "-qm", rel)
    return time.perf_counter() - t


def new_paths(tmp: Path, size_mb: int, nft: int, nbases: int) -> None:
    bases = [model(size_mb, 1000 + b) for b in range(nbases)]
    fts = [(k % nbases, finetune(bases[k % nbases], 2000 + k)) for k in range(nft)]
    raw = sum(v.nbytes for v in bases[0].values())
    print(f"\n## New paths: {nbases} base model(s) of {raw / 2**20:.0f} MB + {nft} fine-tunes added as new paths "
          f"(interleaved over the bases)")
    rows = []
    for label, kind, cfg in (("coral, most recent only", "coral", {"coral.baseCandidates": "1"}),
                             ("coral, best of candidates", "coral", {}),
                             ("git-lfs", "git-lfs", {})):
        repo, store = new_repo(tmp / f"np-{nbases}-{kind}-{len(cfg)}", kind, **cfg)
        for b, st in enumerate(bases):
            add_commit(repo, f"base_{b}.safetensors", st)
        before = du(store)
        secs = sum(add_commit(repo, f"ft/variant_{k}.safetensors", st) for k, (_, st) in enumerate(fts))
        grown = du(store) - before
        rows.append((label, grown, secs))
    today = rows[0][1]
    print(f"{'':28} {'stored for fine-tunes':>22} {'ratio to raw':>13} {'vs most-recent':>15} {'add+commit s':>13}")
    for label, grown, secs in rows:
        print(f"{label:28} {grown / 2**20:19.1f} MB {raw * nft / grown:12.2f}x {today / grown:14.2f}x {secs:13.2f}")


def clean_speed(tmp: Path, size_mb: int) -> None:
    v1 = model(size_mb, 1)
    v2 = finetune(v1, 2)
    raw = sum(v.nbytes for v in v1.values())
    print(f"\n## Clean of a new version of a {raw / 2**20:.0f} MB model (git add after the previous version is committed)")
    for kind in ("coral", "git-lfs"):
        repo, _ = new_repo(tmp / f"speed-{kind}", kind)
        add_commit(repo, "model.safetensors", v1)
        save_file(v2, str(repo / "model.safetensors"))
        t, c = time.perf_counter(), cpu()
        run(repo, "git", "add", "model.safetensors")
        secs, add_cpu = time.perf_counter() - t, cpu() - c
        run(repo, "git", "commit", "-qm", "v2")
        # checkout of the latest: the file removed and checked out again (smudge through git's filter)
        (repo / "model.safetensors").unlink()
        t, c = time.perf_counter(), cpu()
        run(repo, "git", "checkout", "--", "model.safetensors")
        co, co_cpu = time.perf_counter() - t, cpu() - c
        mb = raw / 2**20
        line = (f"{kind:10} git add {secs:5.2f} s {mb / secs:5.0f} MB/s (cpu {add_cpu:4.2f} s)   "
                f"checkout latest {co:5.2f} s {mb / co:5.0f} MB/s (cpu {co_cpu:4.2f} s)")
        if kind == "coral":  # the smudge alone: pointer in, file bytes out (never a direct checkout), no file written
            pointer = run(repo, "git", "cat-file", "blob", "HEAD:model.safetensors").stdout
            t, c = time.perf_counter(), cpu()
            subprocess.run(["git", "coral", "smudge", "model.safetensors"], cwd=repo, input=pointer, check=True,
                           stdout=subprocess.DEVNULL, env={**os.environ, **ENV, "CORAL_DIRECTCHECKOUTSIZE": "0"})
            sm, sm_cpu = time.perf_counter() - t, cpu() - c
            line += f"   smudge latest {mb / sm:5.0f} MB/s (cpu {sm_cpu:4.2f} s)"
        print(line)


def startup(tmp: Path, runs: int) -> None:
    print(f"\n## Start-up: add+commit of a fresh 4 MB checkpoint (median of {runs})")
    for kind in ("coral", "git-lfs"):
        repo, _ = new_repo(tmp / f"small-{kind}", kind)
        c = cpu()
        times = [add_commit(repo, f"ckpt_{k}.safetensors", model(4, 50 + k)) for k in range(runs)]
        print(f"{kind:10} {statistics.median(times):6.3f} s   (cpu {(cpu() - c) / runs:5.3f} s per add+commit)")


def objects_of(repo: Path, rev: str) -> str:
    """What the chunks of ``rev:model.safetensors`` are stored as: keyframes/deltas per codec, loose/packed."""
    from collections import Counter

    from coral_git.core import pointer as ptr
    from coral_git.git.repo import find_repo
    from coral_git.store.codecs import Codec
    from coral_git.store.objects import unpack_header

    store = find_repo(repo).store
    p = ptr.parse(run(repo, "git", "cat-file", "blob", f"{rev}:model.safetensors").stdout)
    kinds: Counter[str] = Counter()
    loose = 0
    for cid in p.chunk_ids():
        h = unpack_header(cid, store.read_header_local(cid))
        kinds[f"{'deltas' if h.base else 'keyframes'} {Codec.registry[h.codec].name}"] += 1
        loose += store.loose.has(cid)
    return ", ".join(f"{n} {k}" for k, n in kinds.most_common()) + f"; {loose} loose, {len(p.chunk_ids()) - loose} packed"


def smudge_speed(tmp: Path, size_mb: int, runs: int) -> None:
    v1 = model(size_mb, 1)
    v2 = finetune(v1, 2)
    mb = sum(v.nbytes for v in v1.values()) / 2**20
    print(f"\n## Smudge and checkout of the latest version of a {mb:.0f} MB model (v2 on top of v1; median of {runs})")
    repo, _ = new_repo(tmp / "smudge-coral", "coral")
    os.environ["CORAL_GC_AUTO"] = "0"  # the store as the adds leave it; gc runs below, not racing the timings
    try:
        add_commit(repo, "model.safetensors", v1)
        add_commit(repo, "model.safetensors", v2)
    finally:
        del os.environ["CORAL_GC_AUTO"]
    pointer = run(repo, "git", "cat-file", "blob", "HEAD:model.safetensors").stdout
    env = {**os.environ, **ENV, "CORAL_DIRECTCHECKOUTSIZE": "0"}
    for state in ("right after the adds", "after gc --auto"):
        if state != "right after the adds":
            run(repo, "git", "coral", "gc", "--auto")
        sm, sm_cpu, co, co_cpu = [], [], [], []
        for _ in range(runs):
            t, c = time.perf_counter(), cpu()
            subprocess.run(["git", "coral", "smudge", "model.safetensors"], cwd=repo, input=pointer, check=True,
                           stdout=subprocess.DEVNULL, env=env)
            sm.append(time.perf_counter() - t)
            sm_cpu.append(cpu() - c)
            (repo / "model.safetensors").unlink()
            t, c = time.perf_counter(), cpu()
            run(repo, "git", "checkout", "--", "model.safetensors")
            co.append(time.perf_counter() - t)
            co_cpu.append(cpu() - c)
        s, k = statistics.median(sm), statistics.median(co)
        print(f"{state:22} smudge {s:5.2f} s {mb / s:5.0f} MB/s (cpu {statistics.median(sm_cpu):4.2f} s)   "
              f"checkout {k:5.2f} s {mb / k:5.0f} MB/s (cpu {statistics.median(co_cpu):4.2f} s)   "
              f"[{objects_of(repo, 'HEAD')}]   load {os.getloadavg()[0]:.2f}")
    status = run(repo, "git", "status", "--porcelain").stdout.decode().strip()
    if status:
        print(f"git status after the checkouts is not clean: {status}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ft", type=int, default=5)
    ap.add_argument("--ft-mb", type=int, default=16)
    ap.add_argument("--size-mb", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--only", choices=("paths", "speed", "startup", "smudge"))
    a = ap.parse_args()
    print(os.popen("uptime").read().strip())
    # an installed package has its bytecode compiled; with PYTHONDONTWRITEBYTECODE set, an editable
    # install would compile every module at each git-coral start (~0.1 s): measure the installed case
    import coral_git

    compileall.compile_dir(os.path.dirname(coral_git.__file__), quiet=1)
    exe = shutil.which("git-coral") or "git-coral (not on PATH)"
    shim = "shims" in exe
    print(f"git-coral: {exe}{' (a pyenv shim: bash + pyenv exec before each start; put the interpreter bin dir first on PATH to measure without)' if shim else ''}")
    with tempfile.TemporaryDirectory(prefix="bench-adds-") as d:
        tmp = Path(d)
        if a.only in (None, "paths"):
            new_paths(tmp, a.ft_mb, a.ft, 1)
            new_paths(tmp, a.ft_mb, a.ft, 2)
        if a.only in (None, "speed"):
            clean_speed(tmp, a.size_mb)
        if a.only in (None, "startup"):
            startup(tmp, a.runs)
        if a.only in (None, "smudge"):
            smudge_speed(tmp, a.size_mb, a.runs)


if __name__ == "__main__":
    main()
