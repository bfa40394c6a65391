"""Maintenance where the store is: gc/fsck/stats in a bare repository, gc on a nearly full disk."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import commit_versions, coral, git, make_state, new_repo, save_safetensors, sha256, small_filesystem

from coral_git.store import packs


def loose_bytes(store: Path) -> int:
    return sum(st.st_size for _, st in packs.loose_stats(store / "objects"))


def test_gc_fsck_stats_run_in_a_bare_repository(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    bare = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    git(repo, "remote", "add", "origin", str(bare))
    state = make_state(seed=1, layers=2, width=128)
    main_shas = commit_versions(repo, "m.safetensors", state, 2, message="main {}")
    git(repo, "push", "-q", "origin", "main")
    git(repo, "checkout", "-q", "-b", "exp")
    save_safetensors(repo / "m.safetensors", make_state(seed=9, layers=2, width=128))  # unrelated weights
    git(repo, "commit", "-qam", "experiment")
    git(repo, "push", "-q", "origin", "exp")
    store = bare / "coral"
    before = len(packs.inventory(_bare_store(bare)))
    assert before > 0

    for cwd in (bare, store):  # the bare repository, and its store directory inside it
        out = coral(cwd, "stats").stdout.decode()
        assert "commits:" in out and "2 versions" not in out
        assert "ok" in coral(cwd, "fsck").stderr.decode()
    git(bare, "update-ref", "-d", "refs/heads/exp")  # the experiment is deleted on the server
    err = coral(bare, "gc", "--prune=now").stderr.decode()
    assert "gc: removed" in err and "removed 0 object(s)" not in err
    after = packs.inventory(_bare_store(bare))
    assert 0 < len(after) < before
    assert not list(packs.loose_stats(store / "objects"))  # packed
    assert "ok" in coral(bare, "fsck").stderr.decode()
    assert "nothing to do" in coral(bare, "gc", "--auto").stderr.decode()

    # what the server kept is all a fresh clone needs, byte for byte
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-checkout", str(bare), str(clone))
    coral(clone, "init")
    git(clone, "checkout", "-qf", "main")
    assert sha256(clone / "m.safetensors") == main_shas[-1]
    git(clone, "checkout", "-q", "HEAD~1", "--", "m.safetensors")
    assert sha256(clone / "m.safetensors") == main_shas[0]

    # commands that need a work tree say so in one line
    for args in (("diff",), ("init",), ("track", "*.x")):
        proc = coral(bare, *args, check=False)
        lines = [ln for ln in proc.stderr.decode().splitlines() if ln]
        assert proc.returncode != 0 and len(lines) == 1 and "needs a work tree" in lines[0], lines


def _bare_store(bare: Path):
    from coral_git.git.repo import find_repo

    return find_repo(bare, bare_ok=True).store


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "mnt", "8m") as mnt:
        yield mnt


def test_gc_frees_space_before_it_needs_any(repo: Path, small_fs: Path) -> None:
    """On a nearly full disk gc deletes unreachable loose objects first, then packs what is kept."""
    store = repo / ".git" / "coral"
    for p in sorted(store.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    store.rmdir()
    store.symlink_to(small_fs)
    save_safetensors(repo / "m.safetensors", make_state(seed=1, layers=2, width=256))  # ~0.5 MB, incompressible
    want = sha256(repo / "m.safetensors")
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "kept")
    kept = loose_bytes(small_fs)
    for seed in (2, 3, 4):  # three versions added and thrown away: unreachable garbage
        save_safetensors(repo / "m.safetensors", make_state(seed=seed, layers=2, width=256))
        git(repo, "add", "m.safetensors")
        git(repo, "reset", "-q", "--hard")
    garbage = loose_bytes(small_fs) - kept
    assert garbage > 2 * kept
    free = os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize
    filler = small_fs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\0" * (free - kept // 2))  # a pack of the kept objects no longer fits
    assert os.statvfs(small_fs).f_bavail * os.statvfs(small_fs).f_frsize < kept
    proc = coral(repo, "gc", "--prune=now", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 0, err
    assert "packed" in err and "removed 0 object(s)" not in err
    assert not list(packs.loose_stats(small_fs / "objects"))
    coral(repo, "fsck")
    (repo / "m.safetensors").unlink()
    git(repo, "checkout", "-q", "--", "m.safetensors")
    assert sha256(repo / "m.safetensors") == want
    subprocess.run(["rm", "-f", str(filler)], check=True)
