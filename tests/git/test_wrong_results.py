"""Regressions for wrong results a new user met: each through the real git binary or the public API."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
from helpers import coral, git, save_safetensors

MODEL = "m.safetensors"


def test_track_escapes_whitespace_like_git_lfs(repo: Path) -> None:
    coral(repo, "track", "my weights.data")
    assert "my[[:space:]]weights.data filter=coral" in (repo / ".gitattributes").read_text()
    (repo / "my weights.data").write_bytes(b"\x00" * 100)
    assert git(repo, "check-attr", "filter", "--", "my weights.data").strip().endswith("filter: coral")
    git(repo, "add", "my weights.data")
    assert git(repo, "show", ":my weights.data").startswith("coral-pointer 2\n")
    assert "untracked: my weights.data" in coral(repo, "untrack", "my weights.data").stderr.decode()


def test_zero_element_torch_tensors_are_listed_everywhere(repo: Path) -> None:
    import torch
    torch.save({"a": torch.zeros(0), "b": torch.zeros(0, 16), "c": torch.ones(3)}, repo / "m.pt")
    git(repo, "add", "m.pt")
    git(repo, "commit", "-qm", "empty tensors")
    import coral_git

    loaded = coral_git.load_torch(repo / "m.pt")
    assert {k: tuple(v.shape) for k, v in loaded.items()} == {"a": (0,), "b": (0, 16), "c": (3,)}
    model = torch.nn.Module()
    for k, v in loaded.items():
        model.register_buffer(k, torch.empty_like(v))
    model.load_state_dict(loaded, strict=True)
    with coral_git.open(repo / "m.pt") as m:
        assert sorted(m) == ["a", "b", "c"] and m["b"].shape == (0, 16)
    shown = coral(repo, "show", "HEAD:m.pt").stdout.decode()
    assert "3 tensors" in shown and "[0, 16]" in shown
    text = coral(repo, "textconv", str(repo / "m.pt")).stdout.decode()
    assert "3 tensors" in text and "b F32 [0,16] id=" in text and "empty" in text
    (repo / "m.pt").unlink()
    git(repo, "checkout", "--", "m.pt")
    assert torch.load(repo / "m.pt", weights_only=True)["b"].shape == (0, 16)


def test_blame_of_the_work_tree_file_stores_nothing_and_names_commits(repo: Path) -> None:
    rng = np.random.default_rng(0)
    state = {f"l{i}": rng.standard_normal((16, 16)).astype(np.float32) for i in range(3)}
    save_safetensors(repo / MODEL, state)
    git(repo, "add", MODEL)
    git(repo, "commit", "-qm", "v1")
    state["l1"] = state["l1"] + 1
    save_safetensors(repo / MODEL, state)
    git(repo, "commit", "-qam", "v2")
    objects = repo / ".git" / "coral" / "objects"
    before = sorted(p.name for p in objects.rglob("*") if p.is_file())
    out = git(repo, "blame", MODEL)
    assert "Not Committed Yet" not in out
    v2 = git(repo, "rev-parse", "--short=7", "HEAD").strip()
    assert any(line.startswith(v2) and " l1 F32" in line for line in out.splitlines())
    assert sorted(p.name for p in objects.rglob("*") if p.is_file()) == before


def test_plumbing_commands_check_their_arguments(repo: Path) -> None:
    save_safetensors(repo / MODEL, {"w": np.ones((64, 64), np.float32)})
    data = (repo / MODEL).read_bytes()
    res = coral(repo, "merge-driver", MODEL, MODEL, MODEL, MODEL, "7", check=False)
    assert res.returncode == 2 and "refusing to overwrite" in res.stderr.decode()
    assert (repo / MODEL).read_bytes() == data  # the model was not replaced by a pointer
    res = coral(repo, "merge-driver", "nope1", "nope2", "nope3", "x", "7", check=False)
    assert res.returncode == 2 and "'nope1' does not exist" in res.stderr.decode()
    res = subprocess.run(["git", "coral", "filter-process"], cwd=repo, stdin=subprocess.DEVNULL, capture_output=True)
    err = res.stderr.decode()
    assert res.returncode == 1 and "no filter protocol" in err and "internal error" not in err and res.stdout == b""
    for args in (["merge-driver", "a"], ["textconv", "missing.safetensors"]):
        res = coral(repo, *args, check=False)
        assert res.returncode != 0 and "Traceback" not in res.stderr.decode() and "internal error" not in res.stderr.decode()


def test_diff_counts_and_draws_removed_tensors_and_does_not_rename_constants(repo: Path) -> None:
    rng = np.random.default_rng(1)
    a = {f"layers.{i}.w": rng.standard_normal((8, 8)).astype(np.float32) for i in range(5)}
    a.update({f"layers.{i}.ln": np.ones(8, np.float32) for i in range(5)})
    save_safetensors(repo / MODEL, a)
    git(repo, "add", MODEL)
    git(repo, "commit", "-qm", "a")
    b = {k: v for k, v in a.items() if k not in ("layers.1.w", "layers.1.ln", "layers.2.ln")}
    b["layers.9.ln"] = np.ones(8, np.float32)  # equal bytes to a removed norm: not a rename
    b["layers.8.w"] = a["layers.1.w"]  # a real rename
    save_safetensors(repo / MODEL, b)
    git(repo, "commit", "-qam", "b")
    table = coral(repo, "diff", "HEAD~1", "HEAD").stdout.decode()
    assert "renamed   layers.1.w → layers.8.w" in table
    assert "added     layers.9.ln" in table and "removed   layers.1.ln" in table and "removed   layers.2.ln" in table
    assert "4 of 11 tensors changed (2 removed, 1 added, 1 renamed)" in table
    stat = coral(repo, "diff", "HEAD~1", "HEAD", "--stat").stdout.decode()
    removed_rows = [ln for ln in stat.splitlines() if "| removed" in ln]
    assert removed_rows and all("-" in r.split("removed")[1] and "+" not in r for r in removed_rows)
    res = coral(repo, "diff", "HEAD~5", check=False)
    assert res.returncode == 2 and "unknown revision or path" in res.stderr.decode()


def test_open_file_works_outside_any_repository(tmp_path: Path) -> None:
    import coral_git

    path = save_safetensors(tmp_path / "loose.safetensors", {"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        with coral_git.open_file(path) as m:
            assert list(m) == ["w"] and m["w"].tolist() == np.arange(12).reshape(3, 4).tolist()
    finally:
        os.chdir(cwd)


def test_remote_show_without_remotes_says_so(repo: Path) -> None:
    res = coral(repo, "remote", "show")
    assert res.returncode == 0 and "no git remotes" in res.stderr.decode()
