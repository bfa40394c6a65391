"""The Python API: tensors of any revision, lazily, as numpy, zarr and torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import git, make_state, perturb, save_safetensors

import coral_git
from coral_git.errors import UsageError


def test_reads_tensor_three_versions_back_exactly(repo: Path) -> None:
    states = [make_state(seed=20)]
    for i in range(3):
        states.append(perturb(states[-1], seed=21 + i))
    for i, s in enumerate(states):
        save_safetensors(repo / "model.safetensors", s)
        git(repo, "add", "model.safetensors")
        git(repo, "commit", "-qm", f"v{i}")
    with coral_git.open("model.safetensors", "HEAD~3", repo=repo) as m:
        assert set(m) == set(states[0])
        for name, want in states[0].items():
            assert m.raw(name) == want.tobytes()
            got = m[name]
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)
        assert m.info("head.weight").shape == (10, 256)
    with coral_git.open(repo / "model.safetensors", rev=None) as m:  # the work tree
        np.testing.assert_array_equal(m["head.weight"], states[3]["head.weight"])
    with coral_git.open("model.safetensors", "", repo=repo) as m:  # the index
        assert m.raw("layers.0.weight") == states[3]["layers.0.weight"].tobytes()


def test_zarr_partial_reads_with_edge_chunks(repo: Path) -> None:
    git(repo, "config", "coral.chunkSize", "4096")
    rng = np.random.default_rng(30)
    a = rng.standard_normal((100, 70)).astype(np.float32)  # 280-byte rows: 14 rows a chunk, a 2-row edge
    c = rng.standard_normal((3, 40, 50)).astype(np.float64)
    s = np.array(3.5, dtype=np.float32)
    save_safetensors(repo / "m.safetensors", {"a": a, "c": c, "s": s})
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v1")
    with coral_git.open("m.safetensors", repo=repo) as m:
        z = m.zarr("a")
        assert z.shape == (100, 70) and z.chunks == (14, 70)
        np.testing.assert_array_equal(z[95:100, 3:9], a[95:100, 3:9])
        np.testing.assert_array_equal(z[:], a)
        zc = m.zarr("c")
        np.testing.assert_array_equal(zc[2, 39, :], c[2, 39, :])
        np.testing.assert_array_equal(zc[:], c)
        assert m.zarr("s")[()] == np.float32(3.5)


def _bf16_file(path: Path, bits: np.ndarray) -> None:
    h = json.dumps({"w": {"dtype": "BF16", "shape": list(bits.shape), "data_offsets": [0, bits.nbytes]}}).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + bits.tobytes())


def test_bf16_numpy_zarr_and_torch(repo: Path) -> None:
    rng = np.random.default_rng(31)
    f = rng.standard_normal((64, 48)).astype(np.float32)
    bits = (f.view(np.uint32) >> 16).astype(np.uint16)
    _bf16_file(repo / "b.safetensors", bits)
    git(repo, "add", "b.safetensors")
    git(repo, "commit", "-qm", "bf16")
    widened = (bits.astype(np.uint32) << 16).view(np.float32)
    with coral_git.open("b.safetensors", repo=repo) as m:
        np.testing.assert_array_equal(m["w"], widened)  # widened to float32, exactly
        np.testing.assert_array_equal(m.zarr("w")[10:20, 5], widened[10:20, 5])
        assert m.raw("w") == bits.tobytes()
        torch = pytest.importorskip("torch")
        t = m.torch("w")
        assert t.dtype == torch.bfloat16 and t.shape == (64, 48)
        assert t.view(torch.int16).numpy().view(np.uint16).tobytes() == bits.tobytes()


def test_api_diff_records_and_errors(repo: Path) -> None:
    s = make_state(seed=32, layers=2, width=32)
    save_safetensors(repo / "model.safetensors", s)
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "v1")
    s2 = perturb(s, seed=33, keys=lambda k: k == "layers.1.weight")
    save_safetensors(repo / "model.safetensors", s2)
    [fd] = coral_git.diff(repo=repo)  # index vs work tree
    assert [t.name for t in fd.tensors] == ["layers.1.weight"]
    d = s2["layers.1.weight"].astype(np.float64) - s["layers.1.weight"]
    assert fd.tensors[0].delta_norm == pytest.approx(np.linalg.norm(d), rel=1e-9)
    assert coral_git.diff("HEAD", "HEAD", repo=repo) == []
    with pytest.raises(UsageError):
        coral_git.open("missing.safetensors", repo=repo)
    with coral_git.open("model.safetensors", repo=repo) as m, pytest.raises(KeyError):
        m["nope"]


def test_torch_checkpoint_tensors(repo: Path) -> None:
    torch = pytest.importorskip("torch")
    base = torch.randn(8, 6)
    sd = {"w": base, "wt": base.t(), "b": torch.arange(5, dtype=torch.int64)}  # "wt" is a strided view
    torch.save(sd, repo / "ckpt.pt")
    git(repo, "add", "ckpt.pt")
    git(repo, "commit", "-qm", "pt")
    with coral_git.open("ckpt.pt", repo=repo) as m:
        assert m.format == "torch-zip"
        np.testing.assert_array_equal(m["w"], base.numpy())
        np.testing.assert_array_equal(m["wt"], base.t().numpy())
        np.testing.assert_array_equal(m["b"], np.arange(5))
        assert torch.equal(coral_git.load_torch("ckpt.pt", repo=repo)["wt"], base.t())
