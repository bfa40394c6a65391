"""Settings that change pointers travel with the repository (.coralconfig); a clone may only agree."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import coral, git, make_state, new_repo, perturb, save_safetensors


def staged_pointer(repo: Path, path: str) -> str:
    return git(repo, "cat-file", "-p", f":{path}")


def test_init_chunk_size_writes_coralconfig_and_explains(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    err = coral(repo, "init").stderr.decode()
    assert "chunk size: default" in err and "git coral init --chunk-size" in err and ".coralconfig" in err
    assert not (repo / ".coralconfig").exists()
    git(repo, "config", "coral.chunkSize", "64k")
    err = coral(repo, "init").stderr.decode()
    assert "warning: coral.chunkSize = 64k is set in git config only" in err
    err = coral(repo, "init", "--chunk-size", "64k").stderr.decode()
    assert git(repo, "config", "--file", ".coralconfig", "coral.chunkSize").strip() == "64k"
    assert ".coralconfig: coral.chunkSize = 64k (commit it" in err
    proc = coral(repo, "init", "--chunk-size", "1", check=False)
    assert proc.returncode == 2 and "out of range" in proc.stderr.decode()
    proc = coral(repo, "init", "--global", "--chunk-size", "4M", check=False)
    assert proc.returncode == 2 and "run it without --global" in proc.stderr.decode()


def test_two_clones_cut_identical_pointers_and_a_disagreeing_clone_fails(tmp_path: Path) -> None:
    origin = new_repo(tmp_path / "origin")
    coral(origin, "init", "--chunk-size", "16k")
    state = make_state(seed=3, layers=2, width=128)  # 64 KiB tensors: several chunks each at 16k
    save_safetensors(origin / "m.safetensors", state)
    git(origin, "add", ".coralconfig", "m.safetensors")
    git(origin, "commit", "-qm", "model with shared chunking")
    assert "16384" in staged_pointer(origin, "m.safetensors") or "16k" in git(origin, "cat-file", "-p", "HEAD:.coralconfig")

    clones = []
    for name, local in (("a", None), ("b", "16384")):
        c = tmp_path / name
        git(tmp_path, "clone", "-q", str(origin), str(c))
        coral(c, "init")
        if local:
            git(c, "config", "coral.chunkSize", local)  # agrees (another spelling): allowed
        clones.append(c)
    nxt = perturb(state, seed=4)
    for c in clones:
        save_safetensors(c / "m.safetensors", nxt)
        git(c, "add", "m.safetensors")
    a, b = (staged_pointer(c, "m.safetensors") for c in clones)
    assert a == b
    assert git(clones[0], "status", "--porcelain", "--untracked-files=no").splitlines() == ["M  m.safetensors"]

    bad = tmp_path / "bad"
    git(tmp_path, "clone", "-q", str(origin), str(bad))
    coral(bad, "init")
    git(bad, "config", "coral.chunkSize", "64k")
    save_safetensors(bad / "m.safetensors", nxt)
    proc = subprocess.run(["git", "add", "m.safetensors"], cwd=bad, capture_output=True, text=True)
    assert proc.returncode != 0
    ours = [ln for ln in proc.stderr.splitlines() if ln.startswith("coral:")]
    assert len(ours) == 1, proc.stderr
    assert ("coral.chunkSize = 64k in git config disagrees with coral.chunkSize = 16k in .coralconfig, "
            "which is committed with the repository and wins") in ours[0]
    assert "git config --unset coral.chunkSize" in ours[0]
    assert staged_pointer(bad, "m.safetensors") == git(origin, "cat-file", "-p", "HEAD:m.safetensors")  # unchanged
    git(bad, "config", "--unset", "coral.chunkSize")
    git(bad, "add", "m.safetensors")
    assert staged_pointer(bad, "m.safetensors") == a


def test_without_coralconfig_the_local_value_still_applies(repo: Path) -> None:
    """A repository that never committed .coralconfig keeps working as before (opt in by committing it)."""
    git(repo, "config", "coral.chunkSize", "16k")
    save_safetensors(repo / "m.safetensors", make_state(seed=5, layers=1, width=128))
    git(repo, "add", "m.safetensors")
    small = staged_pointer(repo, "m.safetensors")
    git(repo, "config", "--unset", "coral.chunkSize")
    git(repo, "rm", "-qf", "--cached", "m.safetensors")
    git(repo, "add", "m.safetensors")
    assert staged_pointer(repo, "m.safetensors") != small
