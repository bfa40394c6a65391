"""Pushing to a Git LFS server (real giftless): every pack goes up once, and packs hold what the
same versions need, so a checkout where Range is ignored downloads little besides its own objects."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from helpers import commit_versions, coral, git, make_state, repo_with_bare, sha256
from helpers.lfs_server import LfsServer, lfs_server  # noqa: F401 - fixture

from coral_git.core import pointer as ptr
from coral_git.remote import indexref
from coral_git.remote.wirepack import parse_index

PACK = 96 << 10


def puts(server: LfsServer) -> list[str]:
    """The oid of every PUT giftless answered, from its request log."""
    return re.findall(r'"PUT /[^ "]*/([0-9a-f]{64}) HTTP/1\.[01]" 2\d\d', server.log_tail(1 << 30))


def test_each_pack_uploaded_once_and_versions_keep_to_their_packs(
    tmp_path: Path, lfs_server: LfsServer, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv("CORAL_WIRE_PACK_BYTES", str(PACK))
    coral(tmp_path, "init", "--global")
    git(tmp_path, "config", "--global", "coral.chunkSize", "16384")
    repo, bare = repo_with_bare(tmp_path)
    git(repo, "config", "lfs.url", lfs_server.lfs_url())
    shas = commit_versions(repo, "model.safetensors", make_state(seed=5, width=160), 3, scale=0.05)
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=repo, capture_output=True)
    assert push.returncode == 0, push.stderr.decode()
    packs = indexref.read(bare, git(bare, "rev-parse", indexref.REF).strip())
    assert len(packs) >= 6
    sent = puts(lfs_server)
    want = sorted(o for p in packs for o in (p.pack_oid, p.index_oid))
    assert sorted(sent) == want  # each pack and each index exactly once, nothing else
    # nothing new: a second push sends no object
    git(repo, "commit", "-q", "--allow-empty", "-m", "empty")
    git(repo, "push", "-q", "origin", "HEAD:main")
    assert len(puts(lfs_server)) == len(sent)
    # where each object lies; what a checkout of each version needs, with its delta bases
    located = {}
    for p in packs:
        index = parse_index((repo / ".git" / "coral" / "wire" / "idx" / p.index_oid).read_bytes(), p.index_oid)
        for e in index:
            located[e.cid] = (p.pack_oid, p.pack_size, e)
    log = git(repo, "log", "--format=%H", "--reverse", "-n3", "HEAD~1").split()
    for n, commit in enumerate(log):
        pointer = ptr.parse(subprocess.run(["git", "cat-file", "blob", f"{commit}:model.safetensors"],
                                           cwd=repo, capture_output=True, check=True).stdout)
        need: set[str] = set()
        todo = list(pointer.chunk_ids())
        while todo:
            cid = todo.pop()
            if cid not in need:
                need.add(cid)
                base = located[cid][2].base
                if base is not None:
                    todo.append(base)
        if n == len(log) - 1:  # pushed newest-first: the latest needs its own objects only
            assert need == set(pointer.chunk_ids())
        objects = sum(located[c][2].length for c in need)
        whole = sum({located[c][0]: located[c][1] for c in need}.values())
        # the packs it downloads where Range is ignored hold its objects, at most a quarter pack besides
        assert whole <= objects + PACK // 4, (n, whole, objects)
    # the server copy checks out byte-exact (oldest version, lazily, in a pointers-only clone)
    lazy = tmp_path / "lazy"
    subprocess.run(["git", "clone", "-q", "-c", f"lfs.url={lfs_server.lfs_url()}", str(bare), str(lazy)],
                   check=True, capture_output=True, env={**os.environ, "CORAL_SKIP_SMUDGE": "1"})
    git(lazy, "checkout", "-q", "HEAD~3", "--", "model.safetensors")
    assert sha256(lazy / "model.safetensors") == shas[0]
