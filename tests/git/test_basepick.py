"""Base choice for tensors at new paths, through real git: a fine-tune added as a new file is stored
as a delta on its own base model even when an unrelated model of the same architecture was stored
last; checkouts are byte-exact and the pointers do not depend on the base chosen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import git, new_repo, save_safetensors, sha256

from coral_git.store.chunkstore import ChunkStore
from coral_git.store.objects import unpack_header


def base_model(seed: int, layers: int = 3, width: int = 256) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"layers.{i}.weight": (rng.standard_normal((width, width)) * 0.02).astype(np.float32) for i in range(layers)}


def finetune(state: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (v * (1 + rng.standard_normal(v.shape).astype(np.float32) * 1e-3)).astype(np.float32) for k, v in state.items()}


def store_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / ".git" / "coral" / "objects").rglob("*") if p.is_file())


def staged_pointer(repo: Path, rel: str) -> str:
    return git(repo, "cat-file", "-p", f":{rel}")


def chunk_ids(pointer: str, tensor: str) -> list[str]:
    for line in pointer.splitlines():
        parts = line.split()
        if parts[:2] == ["tensor", tensor]:
            return parts[6].split(",")
    raise AssertionError(f"{tensor} not in pointer")


def setup(repo: Path, candidates: int | None, width: int = 256) -> tuple[dict, dict]:
    """Two unrelated base models committed (B stored last), then a fine-tune of A at a new path, staged."""
    if candidates is not None:
        git(repo, "config", "coral.baseCandidates", str(candidates))
    git(repo, "config", "coral.chunkSize", "65536")
    a, b = base_model(1, width=width), base_model(2, width=width)
    save_safetensors(repo / "a.safetensors", a)
    git(repo, "add", "a.safetensors")
    git(repo, "commit", "-qm", "a")
    save_safetensors(repo / "b.safetensors", b)
    git(repo, "add", "b.safetensors")
    git(repo, "commit", "-qm", "b")
    (repo / "ft").mkdir()
    save_safetensors(repo / "ft" / "variant_1.safetensors", finetune(a, 7))
    before = store_bytes(repo)
    git(repo, "add", "ft/variant_1.safetensors")
    return {"before": before, "after": store_bytes(repo)}, a


@pytest.mark.parametrize("stream", [False, True])
def test_finetune_at_new_path_picks_its_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    # streaming clean starts above 8 MB: 1536x1536 float32 tensors make each file 27 MB
    width = 1536 if stream else 256
    if not stream:
        monkeypatch.setenv("CORAL_NO_STREAM", "1")
    best = new_repo(tmp_path / "best")
    got, _ = setup(best, None, width)
    recent = new_repo(tmp_path / "recent")
    old, _ = setup(recent, 1, width)
    # the pointer names the bytes, never the base: identical in both repositories
    ptr_best = staged_pointer(best, "ft/variant_1.safetensors")
    assert ptr_best == staged_pointer(recent, "ft/variant_1.safetensors")
    # each stored chunk of the fine-tune is a delta on model A's chunk at the same index
    store = ChunkStore(best / ".git" / "coral")
    ptr_a = git(best, "cat-file", "-p", "HEAD:a.safetensors")
    for name in ("layers.0.weight", "layers.2.weight"):
        for mine, theirs in zip(chunk_ids(ptr_best, name), chunk_ids(ptr_a, name), strict=True):
            hdr = unpack_header(mine, store.read_object_local(mine))
            assert hdr.base == theirs
    grown_best = got["after"] - got["before"]
    grown_recent = old["after"] - old["before"]
    assert grown_best * 1.3 < grown_recent, (grown_best, grown_recent)
    # byte-exact round trip of every file
    for repo in (best, recent):
        git(repo, "commit", "-qm", "ft")
        want = {rel: sha256(repo / rel) for rel in ("a.safetensors", "b.safetensors", "ft/variant_1.safetensors")}
        for rel in want:
            (repo / rel).unlink()
        git(repo, "checkout", "-q", "HEAD", "--", ".")
        assert {rel: sha256(repo / rel) for rel in want} == want


def test_unrelated_model_alone_is_a_keyframe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second, unrelated model at a new path: the only candidate (model A) loses to a keyframe."""
    monkeypatch.setenv("CORAL_NO_STREAM", "1")
    repo = new_repo(tmp_path / "r")
    git(repo, "config", "coral.chunkSize", "65536")
    save_safetensors(repo / "a.safetensors", base_model(1))
    git(repo, "add", "a.safetensors")
    git(repo, "commit", "-qm", "a")
    save_safetensors(repo / "b.safetensors", base_model(2))
    git(repo, "add", "b.safetensors")
    store = ChunkStore(repo / ".git" / "coral")
    for cid in chunk_ids(staged_pointer(repo, "b.safetensors"), "layers.1.weight"):
        assert unpack_header(cid, store.read_object_local(cid)).base is None
    want = sha256(repo / "b.safetensors")
    (repo / "b.safetensors").unlink()
    git(repo, "checkout", "-q", "--", "b.safetensors")
    assert sha256(repo / "b.safetensors") == want
