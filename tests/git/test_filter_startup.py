"""Filter start-up: what a filter process imports, and the clean cache that answers git's re-checks.

Import checks run git with the filter under ``PYTHONPROFILEIMPORTTIME`` (Python's own import log,
one line per module on the filter's stderr, which git passes through); nothing is timed.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
from helpers import git, make_state, save_safetensors

from coral_git.core import pointer as ptr

# the filter alone logs its imports (hooks git runs, e.g. post-checkout, do not)
TRACED = ["-c", "filter.coral.process=env PYTHONPROFILEIMPORTTIME=1 git-coral filter-process"]
NAME = "model.safetensors"


def traced(repo: Path, *args: str) -> set[str]:
    """The modules the filter process(es) of ``git ARGS`` imported (empty: git started no filter)."""
    import subprocess

    proc = subprocess.run(["git", *TRACED, *args], cwd=repo, capture_output=True)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    return {m.group(1) for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", err, re.M)}


def staged(repo: Path, path: str = NAME) -> str:
    return git(repo, "cat-file", "blob", f":{path}")


def make_racy(repo: Path, path: str = NAME) -> None:
    """Give the index the file's mtime: git must re-read the file (racy-git), as ``git commit`` does
    when it runs within the same second as the ``git add`` before it."""
    st = (repo / path).stat()
    os.utime(repo / ".git" / "index", ns=(st.st_atime_ns, st.st_mtime_ns))


def test_filter_imports_no_pygit2_and_only_the_format_it_reads(repo: Path) -> None:
    save_safetensors(repo / "base.safetensors", make_state(1, layers=2, width=64))
    git(repo, "add", "base.safetensors")
    git(repo, "commit", "-qm", "base")
    # a new file at a new path: previous version and base candidates are looked up (index, HEAD)
    save_safetensors(repo / NAME, make_state(2, layers=2, width=64))
    mods = traced(repo, "add", NAME)
    assert "coral_git.filter.clean" in mods and "numcodecs.compat" in mods  # it cleaned, and coded chunks
    assert not {m for m in mods if m.split(".")[0] == "pygit2"}
    readers = {"torchzip", "pickle_reader", "gguf", "npy", "npz", "onnx"}
    assert not {m for m in mods if m.rsplit(".", 1)[-1] in readers and m.startswith("coral_git.formats")}
    assert "numcodecs.registry" not in mods  # numcodecs' package import (entry-point scan) is skipped
    mods = traced(repo, "commit", "-qm", "model")
    assert not {m for m in mods if m.split(".")[0] == "pygit2"}
    (repo / NAME).unlink()
    mods = traced(repo, "checkout", "--", NAME)
    assert "coral_git.filter.smudge" in mods
    assert not {m for m in mods if m.split(".")[0] == "pygit2"}


def test_a_recheck_of_a_just_added_file_is_answered_without_the_clean_machinery(repo: Path) -> None:
    save_safetensors(repo / NAME, make_state(3, layers=2, width=64))
    git(repo, "add", NAME)
    before = staged(repo)
    make_racy(repo)
    mods = traced(repo, "commit", "-qm", "model")
    assert "coral_git.filter.process" in mods  # git did run the filter to re-check the file
    assert "numpy" not in mods and "coral_git.filter.clean" not in mods
    assert git(repo, "cat-file", "blob", f"HEAD:{NAME}") == before
    assert git(repo, "status", "--porcelain") == ""


def test_another_file_under_a_cached_path_is_cleaned_in_full(repo: Path) -> None:
    """git hands the filter other bytes under the recorded path (same size): the hash decides."""
    save_safetensors(repo / NAME, make_state(4, layers=2, width=64))
    git(repo, "add", NAME)
    other = make_state(5, layers=2, width=64)
    save_safetensors(repo / "other.bin.tmp", other)
    assert (repo / "other.bin.tmp").stat().st_size == (repo / NAME).stat().st_size
    oid = git(repo, "hash-object", "-w", f"--path={NAME}", "other.bin.tmp").strip()
    p = ptr.parse(git(repo, "cat-file", "blob", oid).encode())
    q = ptr.parse(staged(repo).encode())
    assert p.file_id != q.file_id and p.size == q.size
    shutil.move(repo / "other.bin.tmp", repo / "check.safetensors")
    git(repo, "add", "check.safetensors")
    assert staged(repo, "check.safetensors").encode() == p.encode()  # the full clean's pointer of those bytes


def test_a_modified_file_of_equal_size_and_mtime_second_is_recleaned(repo: Path) -> None:
    state = make_state(6, layers=2, width=64)
    save_safetensors(repo / NAME, state)
    git(repo, "add", NAME)
    git(repo, "commit", "-qm", "v1")
    st = (repo / NAME).stat()
    before = staged(repo)
    # new bytes of the same size written in place, mtime put back into the same second
    state["layers.0.weight"] = state["layers.0.weight"] + np.float32(1.0)
    save_safetensors(repo / NAME, state)
    assert (repo / NAME).stat().st_size == st.st_size
    os.utime(repo / NAME, ns=(st.st_atime_ns, st.st_mtime_ns // 10**9 * 10**9 + 1))
    make_racy(repo)
    assert git(repo, "status", "--porcelain").strip() == f"M {NAME}"
    git(repo, "add", NAME)
    after = staged(repo)
    assert after != before
    (repo / NAME).unlink()
    git(repo, "checkout", "--", NAME)
    from safetensors.numpy import load_file

    assert np.array_equal(load_file(str(repo / NAME))["layers.0.weight"], state["layers.0.weight"])


def test_cached_pointer_whose_chunks_left_the_store_is_stored_again(repo: Path) -> None:
    save_safetensors(repo / NAME, make_state(7, layers=2, width=64))
    git(repo, "add", NAME)
    text = staged(repo)
    shutil.rmtree(repo / ".git" / "coral" / "objects")  # the chunks are gone (as if collected)
    mods = traced(repo, "add", "--renormalize", NAME)  # git re-cleans the file: a cache candidate
    assert "coral_git.filter.clean" in mods  # the presence check sent it down the full clean
    assert staged(repo) == text
    (repo / NAME).unlink()
    git(repo, "checkout", "--", NAME)  # its chunks are back in the store
    assert staged(repo) == text and git(repo, "status", "--porcelain") == f"A  {NAME}\n"


def test_renormalize_of_unchanged_files_uses_the_cache(repo: Path) -> None:
    save_safetensors(repo / NAME, make_state(8, layers=2, width=64))
    git(repo, "add", NAME)
    text = staged(repo)
    mods = traced(repo, "add", "--renormalize", NAME)
    assert "numpy" not in mods
    assert staged(repo) == text


def test_cache_is_not_used_with_another_chunk_size(repo: Path) -> None:
    save_safetensors(repo / NAME, make_state(9, layers=2, width=128))
    git(repo, "add", NAME)
    first = ptr.parse(staged(repo).encode())
    git(repo, "config", "coral.chunkSize", "16k")
    mods = traced(repo, "add", "--renormalize", NAME)
    assert "coral_git.filter.clean" in mods
    second = ptr.parse(staged(repo).encode())
    assert second.chunk_bytes == 16 << 10 != first.chunk_bytes and second.file_id == first.file_id
