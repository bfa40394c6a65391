"""Shared test helpers: real git in temp repos, generated model files. Import as ``from helpers import …``."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

GIT_ENV = {
    "GIT_AUTHOR_NAME": "coral-test",
    "GIT_AUTHOR_EMAIL": "coral@example.com",
    "GIT_COMMITTER_NAME": "coral-test",
    "GIT_COMMITTER_EMAIL": "coral@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@contextmanager
def isolated_git(home: Path) -> Iterator[None]:
    """Own HOME (no user git config leaks in) and fixed identities; usable by module-scoped fixtures."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(home))
        mp.setenv("XDG_CONFIG_HOME", str(home / ".config"))
        for k, v in GIT_ENV.items():
            mp.setenv(k, v)
        mp.delenv("GIT_DIR", raising=False)
        mp.delenv("GIT_WORK_TREE", raising=False)
        (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
        yield


def git(repo: Path, *args: str, check: bool = True, input: bytes | None = None, env: dict | None = None) -> str:
    """Run the real git binary in ``repo``; return stdout; fail the test with stderr on error."""
    proc = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, input=input, env={**os.environ, **(env or {})}
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def coral(repo: Path, *args: str, check: bool = True, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run ``git coral …`` in ``repo``."""
    proc = subprocess.run(["git", "coral", *args], cwd=repo, capture_output=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"git coral {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
    return proc


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def new_repo(path: Path) -> Path:
    """Create a repository at ``path`` with ``git coral init`` done and .gitattributes committed."""
    path.mkdir()
    git(path, "init", "-q")
    coral(path, "init")
    git(path, "add", ".gitattributes")
    git(path, "commit", "-qm", "init coral")
    return path


def repo_with_bare(tmp: Path, name: str = "repo") -> tuple[Path, Path]:
    """``tmp/name`` with ``git coral init`` done (nothing committed) whose origin is a new bare
    repository ``tmp/shared.git``; returns ``(repo, bare)``."""
    bare = tmp / "shared.git"
    git(tmp, "init", "-q", "--bare", str(bare))
    repo = tmp / name
    repo.mkdir()
    git(repo, "init", "-q")
    coral(repo, "init")
    git(repo, "remote", "add", "origin", str(bare))
    return repo, bare


def commit_versions(
    repo: Path,
    rel: str,
    state: dict[str, np.ndarray],
    versions: int,
    *,
    scale: float = 1e-3,
    message: str = "v{}",
    after: Callable[[], None] | None = None,
) -> list[str]:
    """Commit ``versions`` versions of ``rel`` (``git add -A``), each ``state`` perturbed once more
    (seed = version number); returns the sha256 of each version's file, oldest first."""
    shas = []
    for v in range(versions):
        save_safetensors(repo / rel, state)
        shas.append(sha256(repo / rel))
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", message.format(v))
        if after is not None:
            after()
        state = perturb(state, seed=v, scale=scale)
    return shas


def copy_repo(template: Path, dest: Path) -> Path:
    """A private copy of a template repository (built once per module: tests stay quick)."""
    shutil.copytree(template, dest, symlinks=True)
    return dest


def make_state(seed: int = 0, layers: int = 4, width: int = 256, dtype: str = "float32") -> dict[str, np.ndarray]:
    """A small MLP-like state dict of numpy arrays."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in range(layers):
        out[f"layers.{i}.weight"] = (rng.standard_normal((width, width)) * 0.02).astype(dtype)
        out[f"layers.{i}.bias"] = np.zeros(width, dtype=dtype)
    out["head.weight"] = (rng.standard_normal((10, width)) * 0.02).astype(dtype)
    return out


def perturb(state: dict[str, np.ndarray], seed: int, scale: float = 1e-3, keys: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """A 'next epoch': every (selected) tensor nudged by relative noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in state.items():
        if keys is None or keys(k):
            noise = rng.standard_normal(v.shape).astype(np.float32) * scale
            out[k] = (v.astype(np.float32) * (1 + noise) + noise * 0.01).astype(v.dtype)
        else:
            out[k] = v.copy()
    return out


def save_safetensors(path: Path, state: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    from safetensors.numpy import save_file

    save_file(state, str(path), metadata=metadata)
    return path


# ---------------------------------------------------------------------------------------------
# crash and disk-full tests


def verify_store(repo: Path, store: Path, fsck: bool = True) -> int:
    """Every visible object decodes to its id; ``git coral fsck`` agrees. Returns the object count."""
    from coral_git.store.chunkstore import ChunkStore
    from coral_git.store.packs import attach

    cs = ChunkStore(store)
    ids = sorted(set(cs.loose.ids()) | attach(cs).ids())  # loose and packed (an add's pack too)
    for cid in ids:
        cs.get(cid)  # raises CorruptObjectError on any torn or mismatched object
    if fsck:
        res = coral(repo, "fsck", check=False)
        assert res.returncode == 0, res.stderr.decode()
    return len(ids)


def checkout_equals(repo: Path, rev: str, name: str, want: str, tmp: Path) -> None:
    """Check ``rev:name`` out for real (git's smudge through the filter) and compare bytes."""
    out = tmp / f"co-{rev.replace('~', '_')}"
    if out.exists():
        git(repo, "worktree", "remove", "--force", str(out))
    git(repo, "worktree", "add", "-q", "--detach", str(out), rev)
    try:
        got = hashlib.sha256((out / name).read_bytes()).hexdigest()
        assert got == want, f"{rev}:{name} does not check out exactly"
    finally:
        git(repo, "worktree", "remove", "--force", str(out))


@contextmanager
def small_filesystem(mnt: Path, size: str) -> Iterator[Path]:
    """A small tmpfs of ``size`` at ``mnt`` (root only), else a loop-mounted ext4 image; else skip with the reason."""
    mnt.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        img = mnt.parent / f"{mnt.name}.img"
        subprocess.run(["truncate", "-s", size.upper(), str(img)], check=True)
        mk = subprocess.run(["mkfs.ext4", "-q", str(img)], capture_output=True)
        r2 = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)], capture_output=True) if mk.returncode == 0 else mk
        if r2.returncode != 0:
            pytest.skip(f"cannot mount a small file system here: {r.stderr.decode().strip()} / {r2.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
