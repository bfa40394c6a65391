"""The ``delay`` capability of the filter protocol: a checkout of many model files smudges them in the
background (several at once) and git collects them through ``list_available_blobs``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from helpers import git, make_state, repo_with_bare, save_safetensors, sha256

SHARDS = 6


def shard_repo(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    subprocess.run(["git", "coral", "init", "--global"], check=True, capture_output=True)
    repo, bare = repo_with_bare(tmp_path)
    shas = {}
    for i in range(SHARDS):
        name = f"model-{i:05d}-of-{SHARDS:05d}.safetensors"
        save_safetensors(repo / name, make_state(seed=i, width=128))
        shas[name] = sha256(repo / name)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "shards")
    git(repo, "push", "-q", "origin", "HEAD:main")
    return repo, bare, shas


def test_clone_of_many_shards_uses_delay_and_is_byte_exact(tmp_path: Path) -> None:
    _repo, bare, shas = shard_repo(tmp_path)
    dest = tmp_path / "clone"
    trace = tmp_path / "packets.log"
    env = {**os.environ, "GIT_TRACE_PACKET": str(trace)}
    proc = subprocess.run(["git", "clone", "-q", str(bare), str(dest)], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    for name, want in shas.items():
        assert sha256(dest / name) == want
    log = trace.read_text(errors="replace")
    assert "capability=delay" in log
    assert log.count("status=delayed") == SHARDS
    assert "command=list_available_blobs" in log
    assert git(dest, "status", "--porcelain").strip() == ""


def test_delay_off_gives_the_same_files(tmp_path: Path) -> None:
    _repo, bare, shas = shard_repo(tmp_path)
    dest = tmp_path / "clone"
    trace = tmp_path / "packets.log"
    env = {**os.environ, "CORAL_NO_DELAY": "1", "GIT_TRACE_PACKET": str(trace)}
    proc = subprocess.run(["git", "clone", "-q", str(bare), str(dest)], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert all(sha256(dest / n) == w for n, w in shas.items())
    assert "status=delayed" not in trace.read_text(errors="replace")


def test_a_delayed_file_that_fails_is_reported_in_one_line(tmp_path: Path) -> None:
    """git treats a failed smudge of a required filter as fatal, delayed or not: the clone's checkout
    stops; coral names the file and the missing chunk, and no model file is left mixed."""
    repo, bare, shas = shard_repo(tmp_path)
    from coral_git.core import pointer as ptr

    victim = sorted(shas)[2]
    p = ptr.parse(git(repo, "show", f"HEAD:{victim}").encode())
    others = set()
    for name in shas:
        if name != victim:
            others |= ptr.parse(git(repo, "show", f"HEAD:{name}").encode()).chunk_ids()
    from coral_git.store import packs
    from coral_git.store.chunkstore import ChunkStore

    remote = ChunkStore(bare / "coral")
    packs.attach(remote)
    with remote.lock():  # the victim's own chunks vanish from the remote store (its packs rewritten without them)
        res = packs.repack(remote, drop=p.chunk_ids() - others)
    assert res.dropped == len(p.chunk_ids() - others) > 0
    dest = tmp_path / "clone"
    proc = subprocess.run(["git", "clone", "-q", str(bare), str(dest)], capture_output=True)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert f"coral: {victim}: chunk" in err and "is missing from remote 'origin'" in err, err
    assert "Traceback" not in err and "internal error" not in err, err
    for name, want in shas.items():
        if (dest / name).exists():
            assert sha256(dest / name) == want
    assert not list((dest / ".git" / "coral" / "tmp").glob("delayed-*"))  # no temp file left behind
    shutil.rmtree(dest)
