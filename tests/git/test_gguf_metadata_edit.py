"""A GGUF metadata edit (a longer ``general.name`` shifts every tensor offset) re-stores almost nothing."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
from gguf.quants import quantize
from helpers import coral, git, new_repo

from coral_git.core import pointer as ptr

Q = gguf.GGMLQuantizationType


def write(path: Path, name: str) -> bytes:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(20000)])  # a large, unchanged header part
    rng = np.random.default_rng(0)
    for i in range(4):
        x = rng.standard_normal((1024, 1024)).astype(np.float32)
        w.add_tensor(f"blk.{i}.ffn_up.weight", quantize(x, Q.Q8_0), raw_dtype=Q.Q8_0)
    w.add_tensor("output_norm.weight", np.ones(1024, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def stored(repo: Path) -> int:
    return sum(f.stat().st_size for f in (repo / ".git" / "coral").rglob("*") if f.is_file())


def test_metadata_edit_restores_at_most_two_percent(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    v1 = write(repo / "m.gguf", "base")
    git(repo, "add", "m.gguf")
    git(repo, "commit", "-qm", "v1")
    before = stored(repo)
    v2 = write(repo / "m.gguf", "base, renamed after a metadata edit")
    assert len(v2) != len(v1) or v2[:4096] != v1[:4096]
    git(repo, "commit", "-qam", "v2: metadata edit")
    p1 = ptr.parse(git(repo, "show", "HEAD~1:m.gguf").encode())
    p2 = ptr.parse(git(repo, "show", "HEAD:m.gguf").encode())
    assert [t.chunks for t in p1.tensors] == [t.chunks for t in p2.tensors]  # every tensor found again
    assert any(a.offset != b.offset for a, b in zip(p1.tensors, p2.tensors, strict=True)) or len(v1) == len(v2)
    assert stored(repo) - before <= 0.02 * len(v2)
    assert "weight" not in coral(repo, "diff", "HEAD~1", "HEAD").stdout.decode().replace("skeleton", "")
    for rev, want in (("HEAD~1", v1), ("HEAD", v2)):
        (repo / "m.gguf").unlink()
        git(repo, "checkout", "-q", rev, "--", "m.gguf")
        assert (repo / "m.gguf").read_bytes() == want
