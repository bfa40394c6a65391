"""Scale: two versions of a large model end to end, with the peak memory of every step, next to git-lfs.

    python benchmarks/bench_scale.py                 # 8 GB model (needs ~60 GB of disk, a while)
    python benchmarks/bench_scale.py --size-gb 1     # a smaller run

The model is a safetensors file of float32 4096 x 4096 matrices (64 MiB each); v2 nudges every
weight (w += 1e-3 * N(0,1) * |w|). It is written tensor by tensor, never held in memory. Each step
runs the real git command; its peak RSS is that of the whole process tree (git, the filter process,
hooks and their children), polled from /proc every 10 ms, as a sum over the live processes.

Steps: add v1, commit, status after touch, add v2 + commit, checkout v1, checkout v2 (both with
direct checkout when the model is above coral.directCheckoutSize), git coral diff v1 v2, a merge of
two branches that changed different halves of the tensors (coral only: git-lfs has no merge
driver), gc, push to a bare repository on a local path, clone it. git-lfs runs the same steps where
it has them (gc = git lfs prune; its push/clone go through a local file:// remote).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROWS = 4096
TENSOR_BYTES = ROWS * ROWS * 4
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


# -- the model ------------------------------------------------------------------------------------
def write_models(files: dict[Path, set[int]], n: int) -> None:
    """n tensors per file; in each file the tensors in its set are nudged (v2), the others are v1.

    All files are written in one pass, so each tensor is generated once.
    """
    header: dict[str, object] = {}
    for i in range(n):
        header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [ROWS, ROWS], "data_offsets": [i * TENSOR_BYTES, (i + 1) * TENSOR_BYTES]}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    outs = {path: open(path, "wb") for path in files}  # closed below
    try:
        for f in outs.values():
            f.write(struct.pack("<Q", len(raw)) + raw)
        for i in range(n):
            w1 = np.random.default_rng(i).standard_normal((ROWS, ROWS), dtype=np.float32) * np.float32(0.02)
            noise = np.random.default_rng(1000 + i).standard_normal((ROWS, ROWS), dtype=np.float32)
            w2 = w1 + np.float32(1e-3) * noise * np.abs(w1)
            for path, f in outs.items():
                f.write(memoryview(w2 if i in files[path] else w1).cast("B"))
    finally:
        for f in outs.values():
            f.close()


# -- measuring ------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0


def tree_rss(root: int) -> tuple[int, int]:
    """(sum of RSS over the process tree, largest single RSS)."""
    total = top = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        r = _rss(pid)
        total += r
        top = max(top, r)
        stack.extend(_children(pid))
    return total, top


def run(cmd: list[str], cwd: Path, env: dict[str, str], stdin: bytes | None = None) -> tuple[float, int, int]:
    """Run ``cmd``; return (wall seconds, peak tree RSS, peak single-process RSS) in bytes."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0, 0]
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            total, top = tree_rss(proc.pid)
            peak[0] = max(peak[0], total)
            peak[1] = max(peak[1], top)
            time.sleep(0.01)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, err = proc.communicate(stdin)
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{err.decode(errors='replace')[-2000:]}")
    return wall, peak[0], peak[1]


def git(cwd: Path, env: dict[str, str], *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def drop_caches_hint() -> None:
    """Pages of the files just written stay cached; both tools see the same warm cache."""


# -- the steps ------------------------------------------------------------------------------------
def steps(tool: str, root: Path, models: dict[str, Path], env: dict[str, str]) -> list[tuple[str, float, int, int]]:
    repo = root / f"{tool}-repo"
    bare = root / f"{tool}-remote.git"
    name = "model.safetensors"
    res: list[tuple[str, float, int, int]] = []

    def step(label: str, *cmd: str, cwd: Path = repo, extra: dict[str, str] | None = None) -> None:
        wall, tree, top = run(list(cmd), cwd, {**env, **(extra or {})})
        res.append((label, wall, tree, top))
        print(f"  {tool:6s} {label:28s} {wall:8.2f} s  tree {tree / 1e6:8.0f} MB  largest {top / 1e6:8.0f} MB", flush=True)

    git(root, env, "init", "-q", "-b", "main", str(repo))
    git(root, env, "init", "-q", "--bare", str(bare))
    if tool == "coral":
        git(repo, env, "coral", "init")
    else:
        git(repo, env, "lfs", "install", "--local")
        git(repo, env, "lfs", "track", "*.safetensors")
    git(repo, env, "add", ".gitattributes")
    git(repo, env, "commit", "-qm", "attributes")
    git(repo, env, "remote", "add", "origin", str(bare) if tool == "coral" else f"file://{bare}")
    target = repo / name
    for v in ("v1", "v2"):
        target.unlink(missing_ok=True)
        os.link(models[v], target)  # the same bytes for both tools, no copy
        step(f"add {v}", "git", "add", name)
        step(f"commit {v}", "git", "commit", "-qm", v)
        git(repo, env, "tag", v)
        if v == "v1":
            os.utime(target)
            step("status after touch", "git", "status", "--porcelain")
    step("checkout v1", "git", "checkout", "-q", "v1")
    step("checkout v2 (latest)", "git", "checkout", "-q", "main")
    step("status after checkout", "git", "status", "--porcelain")
    if tool == "coral":
        git(repo, env, "checkout", "-q", "v1")
        step("checkout v2 (direct off)", "git", "checkout", "-q", "main", extra={"CORAL_DIRECTCHECKOUTSIZE": "0"})
        step("git coral diff v1 v2", "git", "coral", "diff", "v1", "v2")
        git(repo, env, "checkout", "-q", "-b", "left", "v1")
        target.unlink()
        os.link(models["left"], target)
        git(repo, env, "commit", "-qam", "left half")
        git(repo, env, "checkout", "-q", "-b", "right", "v1")
        target.unlink()
        os.link(models["right"], target)
        git(repo, env, "commit", "-qam", "right half")
        step("merge (per tensor)", "git", "merge", "-q", "--no-edit", "left")
        git(repo, env, "checkout", "-q", "main")
        git(repo, env, "branch", "-D", "left", "right")
        step("gc", "git", "coral", "gc")
    else:
        step("gc (lfs prune)", "git", "lfs", "prune")
    step("push to path remote", "git", "push", "-q", "origin", "main")
    url = str(bare) if tool == "coral" else f"file://{bare}"
    step("clone", "git", "clone", "-q", url, str(root / f"{tool}-clone"), cwd=root)
    got = (root / f"{tool}-clone" / name).stat().st_size
    if got != models["v2"].stat().st_size:
        raise SystemExit(f"{tool}: the clone's model has {got} bytes")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-gb", type=float, default=8.0, help="model size in GB (default 8)")
    ap.add_argument("--direct-size", default="512m", help="coral.directCheckoutSize for the run (default 512m, coral's default; 0 = off)")
    ap.add_argument("--workdir", type=Path, help="where to work (default: a temp dir under /tmp)")
    ap.add_argument("--no-lfs", action="store_true", help="skip git-lfs")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()

    n = max(2, round(args.size_gb * 1e9 / TENSOR_BYTES))
    root = Path(tempfile.mkdtemp(prefix="bench-scale-", dir=args.workdir))
    home = root / "home"
    home.mkdir()
    env = {**os.environ, **GIT_ENV, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "CORAL_QUIET": "1"}
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    # clones need the filters: configured for this HOME, as 'git coral init --global' and 'git lfs install' do
    subprocess.run(["git", "coral", "init", "--global"], env=env, check=True, capture_output=True)
    git(root, env, "config", "--global", "coral.directCheckoutSize", args.direct_size)
    if not args.no_lfs:
        git(root, env, "lfs", "install", "--skip-repo")
    try:
        t0 = time.perf_counter()
        half = n // 2
        nudged = {"v1": set(), "v2": set(range(n)), "left": set(range(half)), "right": set(range(half, n))}
        models = {v: root / f"{v}.safetensors" for v in nudged}
        write_models({models[v]: nudged[v] for v in nudged}, n)
        size = models["v1"].stat().st_size
        print(f"model: {n} x float32[{ROWS},{ROWS}] = {size / 1e9:.2f} GB; written in {time.perf_counter() - t0:.0f} s; "
              f"coral.directCheckoutSize = {args.direct_size}; {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}", flush=True)
        results = {"coral": steps("coral", root, models, env)}
        if not args.no_lfs:
            results["lfs"] = steps("lfs", root, models, env)
        print()
        print(f"{'step':28s} {'coral s':>8s} {'coral MB':>9s} {'lfs s':>8s} {'lfs MB':>8s} {'coral/lfs':>9s}")
        lfs = {label.split(" (")[0]: r for label, *r in results.get("lfs", [])}
        for label, wall, tree, _top in results["coral"]:
            other = lfs.get(label.split(" (")[0])
            if other:
                print(f"{label:28s} {wall:8.2f} {tree / 1e6:9.0f} {other[0]:8.2f} {other[1] / 1e6:8.0f} {wall / other[0]:9.2f}")
            else:
                print(f"{label:28s} {wall:8.2f} {tree / 1e6:9.0f} {'-':>8s} {'-':>8s} {'-':>9s}")
        for tool in results:
            du = subprocess.run(["du", "-sb", str(root / f"{tool}-repo" / ".git")], capture_output=True, text=True).stdout.split()[0]
            print(f"{tool}: .git after both versions (and the merge, for coral): {int(du) / 1e9:.2f} GB")
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
