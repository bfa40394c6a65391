"""Opaque files get content-defined chunks, named in the pointer's chunking line; fixed pointers stay readable."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, new_repo

from coral_git.core import pointer as ptr
from coral_git.core.cdc import cdc_params
from coral_git.core.chunking import byte_chunks
from coral_git.errors import PointerError
from coral_git.filter.clean import clean
from coral_git.git.repo import find_repo
from coral_git.store.chunkstore import chunk_id

ID = "0" * 32


def text(chunking: str, tensors: str = "") -> bytes:
    return f"coral-pointer 1\nfile 10 opaque {ID}\nchunking {chunking}\nskeleton {10 - (4 if tensors else 0)} {ID}\n{tensors}".encode()


def test_chunking_token_round_trips_and_bad_ones_are_refused() -> None:
    p = ptr.parse(text("cdc-262144-786432-4194304"))
    assert p.cdc == (262144, 786432, 4194304) and p.chunk_bytes == 786432
    assert p.encode() == text("cdc-262144-786432-4194304")
    old = ptr.parse(text("1048576"))
    assert old.cdc is None and old.chunk_bytes == 1048576
    for bad in ("cdc-1-2", "cdc-3-2-1", "cdc-0-1-2", "cdc-a-b-c", "cdc-01-2-3", "cdc-1-2-3-4", "cdc--1-2-3", "fastcdc-1-2-3"):
        with pytest.raises(PointerError):
            ptr.parse(text(bad))
    with pytest.raises(PointerError):  # smudge places skeleton chunks of files with tensors by the fixed grid
        ptr.parse(text("cdc-1-2-3", f"tensor w U8 [4] 6 4 {ID}\n"))


def data(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def stored(repo: Path) -> int:
    return sum(f.stat().st_size for f in (repo / ".git" / "coral").rglob("*") if f.is_file())


def test_insertion_at_offset_100_restores_little_through_git(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    v1 = data(12 << 20)
    v2 = v1[:100] + b"!" + v1[100:]
    (repo / "blob.bin").write_bytes(v1)
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-qm", "v1")
    p1 = ptr.parse(git(repo, "show", "HEAD:blob.bin").encode())
    lo, avg, hi = cdc_params(1 << 20)
    assert p1.format == "opaque" and p1.cdc == (lo, avg, hi) and f"chunking cdc-{lo}-{avg}-{hi}\n" in p1.render()
    before = stored(repo)
    (repo / "blob.bin").write_bytes(v2)
    git(repo, "commit", "-qam", "v2: one byte inserted at offset 100")
    p2 = ptr.parse(git(repo, "show", "HEAD:blob.bin").encode())
    new = [c for c in p2.skeleton if c not in set(p1.skeleton)]
    assert 1 <= len(new) <= 2 and len(p2.skeleton) >= 8
    assert stored(repo) - before <= 2 * hi  # random bytes do not compress: only the chunks around the edit
    diff = coral(repo, "diff", "HEAD~1", "HEAD").stdout.decode()
    assert "blob.bin" in diff
    for rev, want in (("HEAD~1", v1), ("HEAD", v2)):
        (repo / "blob.bin").unlink()
        git(repo, "checkout", "-q", rev, "--", "blob.bin")
        assert (repo / "blob.bin").read_bytes() == want
    # the pointer depends on the bytes alone: a fresh repository gives the same text
    other = new_repo(tmp_path / "other")
    (other / "blob.bin").write_bytes(v2)
    git(other, "add", "blob.bin")
    assert git(other, "show", ":blob.bin") == git(repo, "show", "HEAD:blob.bin")


def test_files_with_tensors_keep_fixed_cuts(tmp_path: Path) -> None:
    buf = io.BytesIO()
    np.save(buf, np.arange(1000, dtype=np.float32))
    repo = new_repo(tmp_path / "repo")
    res = clean(buf.getvalue(), find_repo(repo).store, chunk_bytes=1 << 20)
    assert res.pointer.cdc is None and res.pointer.render().split("\n")[2] == "chunking 1048576"


def test_old_fixed_size_opaque_pointer_still_checks_out(tmp_path: Path) -> None:
    """A pointer written before CDC (``chunking 1048576``, fixed 1 MiB cuts) rebuilds the same bytes."""
    import xxhash

    repo = new_repo(tmp_path / "repo")
    body = data(3 << 20, 7)
    store = find_repo(repo).store
    ids = []
    for s, e in byte_chunks(len(body), 1 << 20):
        raw = np.frombuffer(body[s:e], dtype=np.uint8)
        store.put(raw, 1, None, cid=chunk_id(raw))
        ids.append(chunk_id(raw))
    old = ptr.Pointer(len(body), "opaque", xxhash.xxh3_128_hexdigest(body), 1 << 20, len(body), tuple(ids), ())
    assert "chunking 1048576\n" in old.render()
    blob = git(repo, "hash-object", "-w", "--stdin", input=old.encode()).strip()
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},old.bin")
    git(repo, "commit", "-qm", "old-style pointer")
    git(repo, "checkout", "-q", "HEAD", "--", "old.bin")
    assert (repo / "old.bin").read_bytes() == body
