"""End-to-end tests of the tensor-aware diff: git diff (external driver), git coral diff/log, textconv."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, make_state, perturb, save_safetensors


def commit_model(repo: Path, state: dict[str, np.ndarray], msg: str, name: str = "model.safetensors") -> None:
    save_safetensors(repo / name, state)
    git(repo, "add", name)
    git(repo, "commit", "-qm", msg)


def coral_json(repo: Path, *revs: str, tensors: list[str] | None = None, cached: bool = False) -> list[dict]:
    """The records `git coral diff --json` prints, computed in-process (same code, no start-up cost)."""
    from coral_git.api import model as api

    fds = api.diff(*revs, tensors=tensors, cached=cached, repo=repo)
    return json.loads(json.dumps([fd.as_dict() for fd in fds]))


def expected(old: np.ndarray, new: np.ndarray) -> dict[str, float]:
    a, b = old.astype(np.float64).ravel(), new.astype(np.float64).ravel()
    d = b - a
    return {
        "delta_norm": float(np.linalg.norm(d)),
        "rel_change": float(np.linalg.norm(d) / np.linalg.norm(a)),
        "max_abs": float(np.abs(d).max()),
        "frac_changed": float(np.mean(old.ravel() != new.ravel())),
        "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
    }


def test_finetune_head_only(repo: Path) -> None:
    base = make_state(seed=1)
    commit_model(repo, base, "base")
    tuned = perturb(base, seed=2, scale=1e-2, keys=lambda k: k.startswith("head"))
    commit_model(repo, tuned, "fine-tune head")

    [fd] = json.loads(coral(repo, "diff", "--json", "HEAD~1", "HEAD").stdout)
    assert [t["name"] for t in fd["tensors"]] == ["head.weight"]
    assert fd["unchanged"] == len(base) - 1
    rec = fd["tensors"][0]
    assert rec["status"] == "modified"
    for key, want in expected(base["head.weight"], tuned["head.weight"]).items():
        assert rec[key] == pytest.approx(want, rel=1e-9, abs=1e-15), key
    assert rec["changed_elements"] == int(np.count_nonzero(base["head.weight"] != tuned["head.weight"]))
    assert fd["params_total"] == sum(v.size for v in tuned.values())

    out = git(repo, "diff", "HEAD~1", "HEAD")
    assert "diff --coral a/model.safetensors b/model.safetensors" in out
    assert "head.weight" in out and "layers.0.weight" not in out
    assert f"1 of {len(base)} tensors changed" in out
    assert "\x1b[" not in out  # not a terminal: no colour


def test_unchanged_tensors_are_never_decoded(repo: Path) -> None:
    base = make_state(seed=3)
    commit_model(repo, base, "base")
    commit_model(repo, perturb(base, seed=4, keys=lambda k: k == "head.weight"), "head")
    # remove every chunk of an unchanged tensor from the store: the diff must not need them
    from coral_git.core.pointer import parse

    p = parse(git(repo, "cat-file", "blob", "HEAD:model.safetensors").encode())
    store = repo / ".git" / "coral" / "objects"
    for t in p.tensors:
        if t.name == "layers.1.weight":
            for c in t.chunks:
                (store / c[:2] / c[2:]).unlink()
    [fd] = coral_json(repo, "HEAD~1", "HEAD")
    assert [t["name"] for t in fd["tensors"]] == ["head.weight"]


def test_structural_changes(repo: Path) -> None:
    s = make_state(seed=5, layers=3, width=64)
    commit_model(repo, s, "v1")
    t = dict(s)
    t["layers.0.renamed"] = t.pop("layers.0.weight")  # renamed, same bytes
    del t["layers.1.bias"]  # removed
    t["new.weight"] = np.ones((4, 4), np.float32)  # added
    t["layers.1.weight"] = s["layers.1.weight"].reshape(32, 128).copy()  # reshaped
    t["layers.2.weight"] = s["layers.2.weight"].astype(np.float16)  # dtype changed
    commit_model(repo, t, "v2")
    [fd] = coral_json(repo, "HEAD~1", "HEAD")
    status = {r["name"]: r for r in fd["tensors"]}
    assert status["layers.0.renamed"]["status"] == "renamed"
    assert status["layers.0.renamed"]["old_name"] == "layers.0.weight"
    assert status["layers.1.bias"]["status"] == "removed"
    assert status["new.weight"]["status"] == "added"
    assert status["layers.1.weight"]["status"] == "reshaped"
    assert status["layers.1.weight"]["old_shape"] == [64, 64] and status["layers.1.weight"]["new_shape"] == [32, 128]
    assert status["layers.1.weight"]["delta_norm"] == 0.0
    rt = status["layers.2.weight"]
    assert rt["status"] == "retyped" and (rt["old_dtype"], rt["new_dtype"]) == ("F32", "F16")
    want = expected(s["layers.2.weight"], t["layers.2.weight"])
    assert rt["delta_norm"] == pytest.approx(want["delta_norm"], rel=1e-9)
    assert set(status) == {"layers.0.renamed", "layers.1.bias", "new.weight", "layers.1.weight", "layers.2.weight"}
    out = git(repo, "diff", "HEAD~1", "HEAD")
    assert "layers.0.weight → layers.0.renamed" in out and "[64,64]→[32,128]" in out and "F32→F16" in out


def write_raw_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> None:
    header, off, blobs = {}, 0, []
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blobs.append(data)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_bf16_fp16_statistics_do_not_overflow(repo: Path) -> None:
    rng = np.random.default_rng(7)
    big = rng.uniform(1e30, 3e30, size=(64, 64)).astype(np.float32)  # squares overflow float32
    half = rng.uniform(6e4, 6.5e4, size=(64, 64)).astype(np.float16)  # squares overflow float16
    b0 = to_bf16_bits(big)
    b1 = b0.copy()
    b1[::3] += 1
    h1 = half.copy()
    h1[5] = np.float16(-6e4)
    write_raw_safetensors(repo / "m.safetensors", {"b": ("BF16", big.shape, b0.tobytes()), "h": ("F16", half.shape, half.tobytes())})
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "v1")
    write_raw_safetensors(repo / "m.safetensors", {"b": ("BF16", big.shape, b1.tobytes()), "h": ("F16", half.shape, h1.tobytes())})
    [fd] = coral_json(repo)  # work tree vs index: the working file is hashed, not stored
    recs = {r["name"]: r for r in fd["tensors"]}
    f0 = (b0.astype(np.uint32) << 16).view(np.float32)
    f1 = (b1.astype(np.uint32) << 16).view(np.float32)
    for name, (a, b) in {"b": (f0, f1), "h": (half, h1)}.items():
        want = expected(a, b)
        for key in ("delta_norm", "rel_change", "max_abs", "cosine"):
            assert np.isfinite(recs[name][key]), (name, key)
            assert recs[name][key] == pytest.approx(want[key], rel=1e-9), (name, key)
    assert git(repo, "status", "--porcelain", "m.safetensors").startswith(" M")


def test_opaque_file_byte_summary(repo: Path) -> None:
    rng = np.random.default_rng(8)
    data = bytearray(rng.integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    (repo / "blob.bin").write_bytes(bytes(data))
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-qm", "v1")
    data[1000:1010] = b"x" * 10
    (repo / "blob.bin").write_bytes(bytes(data))
    git(repo, "commit", "-qam", "v2")
    [fd] = coral_json(repo, "HEAD~1", "HEAD")
    assert fd["bytes"] is not None and fd["tensors"] == []
    assert fd["bytes"]["differing_bytes"] == sum(1 for i in range(1000, 1010) if data[i] != ord("x")) or fd["bytes"]["differing_bytes"] <= 10
    assert fd["bytes"]["chunks_changed"] == 1
    out = git(repo, "diff", "HEAD~1", "HEAD")
    assert "opaque file" in out and "bytes differ" in out


def test_log_p_shows_textconv_lines(repo: Path) -> None:
    s = make_state(seed=9, layers=2, width=32)
    commit_model(repo, s, "v1")
    commit_model(repo, perturb(s, seed=10, keys=lambda k: k == "layers.1.weight"), "v2")
    out = git(repo, "log", "-p", "-1")
    changed = [ln for ln in out.splitlines() if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))]
    assert any(ln.startswith("-layers.1.weight F32 [32,32] id=") for ln in changed)
    assert any(ln.startswith("+layers.1.weight F32 [32,32] id=") and "mean=" in ln for ln in changed)
    assert not any("layers.0.weight" in ln for ln in changed)
    show = git(repo, "show", "HEAD~1:model.safetensors")
    assert show.startswith("coral safetensors file") or "layers.0.weight F32" in git(repo, "show", "--textconv", "HEAD~1:model.safetensors")


def test_worktree_diff_and_filters(repo: Path) -> None:
    s = make_state(seed=11)
    commit_model(repo, s, "v1")
    t = perturb(s, seed=12, keys=lambda k: k in ("head.weight", "layers.2.weight"))
    save_safetensors(repo / "model.safetensors", t)
    out = git(repo, "diff")  # index vs work tree: the driver gets a null hex for the new side
    assert "head.weight" in out and "layers.2.weight" in out and "2 of 9 tensors changed" in out
    [fd] = coral_json(repo, tensors=["layers.*"])
    assert [r["name"] for r in fd["tensors"]] == ["layers.2.weight"]
    names = coral(repo, "diff", "--sort", "name", "--stat").stdout.decode()
    assert names.index("head.weight") < names.index("layers.2.weight")
    assert " | rel " in names
    git(repo, "add", "model.safetensors")
    [fd] = coral_json(repo, cached=True)
    assert {r["name"] for r in fd["tensors"]} == {"head.weight", "layers.2.weight"}


def test_coral_log_and_show(repo: Path) -> None:
    s = make_state(seed=13, layers=2, width=32)
    commit_model(repo, s, "v1")
    s2 = perturb(s, seed=14, keys=lambda k: k == "head.weight")
    commit_model(repo, s2, "v2")
    commit_model(repo, perturb(s2, seed=15, keys=lambda k: k == "layers.0.weight"), "v3")
    out = coral(repo, "log", "model.safetensors", "--tensor", "head.*").stdout.decode()
    assert out.count("commit ") == 2 and "v2" in out and "v3" not in out and "rel " in out
    from coral_git.api import model as api

    log = api.history("model.safetensors", repo=repo)  # what `git coral log --json` prints
    assert [e["subject"] for e in log] == ["v3", "v2", "v1"]
    assert [t.name for t in log[0]["diff"].tensors] == ["layers.0.weight"]
    with api.open("model.safetensors", "HEAD~2", repo=repo) as m:  # what `git coral show --json` prints
        rows = {r["name"]: r for r in api.tensor_table(m)}
    assert rows["head.weight"]["stats"]["mean"] == pytest.approx(float(s["head.weight"].astype(np.float64).mean()), rel=1e-9)
    assert rows["layers.0.weight"]["stored"] > 0
    one = json.loads(coral(repo, "show", "HEAD~2:model.safetensors", "--tensor", "head.weight", "--json").stdout)
    assert one["first"] == pytest.approx(s["head.weight"].ravel()[:8].tolist())


def test_torch_checkpoint_names(repo: Path) -> None:
    torch = pytest.importorskip("torch")
    sd = {"enc.weight": torch.randn(16, 8), "enc.bias": torch.zeros(16), "dec.weight": torch.randn(4, 16)}
    torch.save(sd, repo / "ckpt.pt")
    git(repo, "add", "ckpt.pt")
    git(repo, "commit", "-qm", "v1")
    sd2 = {k: v.clone() for k, v in sd.items()}
    sd2["dec.weight"] += 0.5
    torch.save(sd2, repo / "ckpt.pt")
    git(repo, "commit", "-qam", "v2")
    [fd] = coral_json(repo, "HEAD~1", "HEAD")
    assert fd["new_format"] == "torch-zip"
    assert [r["name"] for r in fd["tensors"]] == ["dec.weight"]
    assert fd["tensors"][0]["max_abs"] == pytest.approx(0.5, rel=1e-6)
    assert fd["unchanged"] == 2
