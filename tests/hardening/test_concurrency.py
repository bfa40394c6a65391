"""Concurrency: two ``git add``s at once in two worktrees of one repository share one store.

Scenarios: different models; models that share most tensors (both write the same chunks at once);
two new versions of one committed model (both re-encode the same old chunks as deltas at once);
``git coral gc`` looping while an add runs; two clones pushing to one bare remote at once.
Afterwards every branch checks out byte-exact, every object decodes to its id and fsck is clean.
``CORAL_CONC_MB`` (default 48) sets each model's size.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
from helpers import checkout_equals, git, verify_store

MB = int(os.environ.get("CORAL_CONC_MB", "48"))


def model(path: Path, seed: int, shared_seed: int | None = None, nudge: int = 0) -> str:
    """``MB`` 1-MiB tensors; with ``shared_seed`` the first three quarters come from that seed."""
    from safetensors.numpy import save_file

    def block(s: int, n: int) -> np.ndarray:
        return np.random.default_rng(s).standard_normal((n, 1 << 18)).astype(np.float32)

    if shared_seed is None:
        data = block(seed, MB)
    else:
        k = MB * 3 // 4
        data = np.concatenate([block(shared_seed, k), block(seed, MB - k)])
    if nudge:
        data = data * (1 + 1e-3 * block(nudge, MB))
    save_file({f"t.{i:03d}": data[i].reshape(512, 512) for i in range(MB)}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def two_worktrees(repo: Path, tmp: Path) -> tuple[Path, Path]:
    a, b = tmp / "wt-a", tmp / "wt-b"
    git(repo, "worktree", "add", "-q", "-b", "a", str(a))
    git(repo, "worktree", "add", "-q", "-b", "b", str(b))
    return a, b


def add_both(a: Path, b: Path, name_a: str, name_b: str) -> None:
    """Start both adds, then wait: they run at the same time."""
    pa = subprocess.Popen(["git", "add", name_a], cwd=a, stderr=subprocess.PIPE)
    pb = subprocess.Popen(["git", "add", name_b], cwd=b, stderr=subprocess.PIPE)
    ea, eb = pa.communicate(timeout=600)[1], pb.communicate(timeout=600)[1]
    assert pa.returncode == 0, ea.decode()
    assert pb.returncode == 0, eb.decode()


def store_of(repo: Path) -> Path:
    return repo / ".git" / "coral"


def test_two_adds_of_different_models(repo: Path, tmp_path: Path) -> None:
    a, b = two_worktrees(repo, tmp_path)
    sa, sb = model(a / "m.safetensors", 1), model(b / "m.safetensors", 2)
    add_both(a, b, "m.safetensors", "m.safetensors")
    git(a, "commit", "-qm", "a")
    git(b, "commit", "-qm", "b")
    verify_store(repo, store_of(repo))
    checkout_equals(repo, "a", "m.safetensors", sa, tmp_path)
    checkout_equals(repo, "b", "m.safetensors", sb, tmp_path)


def test_two_adds_sharing_tensors(repo: Path, tmp_path: Path) -> None:
    a, b = two_worktrees(repo, tmp_path)
    sa = model(a / "x.safetensors", 11, shared_seed=5)
    sb = model(b / "y.safetensors", 12, shared_seed=5)
    add_both(a, b, "x.safetensors", "y.safetensors")
    git(a, "commit", "-qm", "a")
    git(b, "commit", "-qm", "b")
    n = verify_store(repo, store_of(repo))
    assert n < 2 * MB + 8, f"shared tensors were stored twice ({n} objects)"
    checkout_equals(repo, "a", "x.safetensors", sa, tmp_path)
    checkout_equals(repo, "b", "y.safetensors", sb, tmp_path)


def test_two_new_versions_of_one_model(repo: Path, tmp_path: Path) -> None:
    """Both adds re-encode the same committed chunks as deltas against their own new version."""
    s0 = model(repo / "m.safetensors", 3)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v0")
    a, b = two_worktrees(repo, tmp_path)
    sa = model(a / "m.safetensors", 3, nudge=21)
    sb = model(b / "m.safetensors", 3, nudge=22)
    add_both(a, b, "m.safetensors", "m.safetensors")
    git(a, "commit", "-qm", "a")
    git(b, "commit", "-qm", "b")
    verify_store(repo, store_of(repo))
    checkout_equals(repo, "main", "m.safetensors", s0, tmp_path)
    checkout_equals(repo, "a", "m.safetensors", sa, tmp_path)
    checkout_equals(repo, "b", "m.safetensors", sb, tmp_path)


def test_gc_while_adding(repo: Path, tmp_path: Path) -> None:
    """``git coral gc`` (default grace period) runs while another worktree adds a model."""
    import time

    s0 = model(repo / "m.safetensors", 3)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v0")
    a, _ = two_worktrees(repo, tmp_path)
    sa = model(a / "m.safetensors", 3, nudge=31)
    add = subprocess.Popen(["git", "add", "m.safetensors"], cwd=a, stderr=subprocess.PIPE)
    time.sleep(0.3)
    gcs = 0
    while add.poll() is None:  # gc over and over until the add is done
        proc = subprocess.run(["git", "coral", "gc"], cwd=repo, capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode()
        gcs += 1
    assert add.wait() == 0, add.stderr.read().decode() if add.stderr else ""
    git(a, "commit", "-qm", "a")
    subprocess.run(["git", "coral", "gc"], cwd=repo, check=True, capture_output=True)
    verify_store(repo, store_of(repo))
    checkout_equals(repo, "main", "m.safetensors", s0, tmp_path)
    checkout_equals(repo, "a", "m.safetensors", sa, tmp_path)
    assert gcs >= 1


def test_two_pushes_to_one_remote(repo: Path, tmp_path: Path) -> None:
    """Two clones push models that share tensors to one bare remote at once; a third clone gets both."""
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(remote))
    clones = []
    for who in ("a", "b"):
        c = tmp_path / f"clone-{who}"
        git(tmp_path, "clone", "-q", str(remote), str(c))
        subprocess.run(["git", "coral", "init"], cwd=c, check=True, capture_output=True)
        clones.append(c)
    sa = model(clones[0] / "x.safetensors", 41, shared_seed=7)
    sb = model(clones[1] / "y.safetensors", 42, shared_seed=7)
    for c, name in zip(clones, ("x.safetensors", "y.safetensors"), strict=True):
        git(c, "add", name)
        git(c, "commit", "-qm", name)
    pushes = [
        subprocess.Popen(["git", "push", "-q", "origin", f"HEAD:{br}"], cwd=c, stderr=subprocess.PIPE)
        for c, br in zip(clones, ("a", "b"), strict=True)
    ]
    for p in pushes:
        assert p.wait(timeout=600) == 0, p.stderr.read().decode() if p.stderr else ""
    from coral_git.store import packs
    from coral_git.store.chunkstore import ChunkStore

    rstore = ChunkStore(remote / "coral")
    ids = set(rstore.loose.ids()) | packs.attach(rstore).ids()  # pushes write packs
    assert ids
    for cid in ids:
        rstore.get(cid)
    fresh = tmp_path / "fresh"
    git(tmp_path, "clone", "-q", str(remote), str(fresh))
    subprocess.run(["git", "coral", "init"], cwd=fresh, check=True, capture_output=True)
    checkout_equals(fresh, "origin/a", "x.safetensors", sa, tmp_path)
    checkout_equals(fresh, "origin/b", "y.safetensors", sb, tmp_path)
