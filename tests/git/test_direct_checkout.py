"""Direct checkout: above coral.directCheckoutSize git gets the pointer and coral writes the file.

Every git command that checks files out must end with the exact bytes and a clean `git status`
(with the index entry refreshed, so status does not re-hash); a kill -9 during the direct write
leaves the pointer, never a partial model.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, new_repo, save_safetensors, sha256

from coral_git.git.install import CONFIG

NAME = "model.safetensors"
DIRECT = "8m"


def model(seed: int, a_seed: int | None = None, b_seed: int | None = None) -> dict[str, np.ndarray]:
    """A 12 MB model (two float32 tensors); ``a_seed``/``b_seed`` vary one tensor only."""
    a = np.random.default_rng(seed if a_seed is None else a_seed).standard_normal((2048, 1024)).astype(np.float32)
    b = np.random.default_rng(seed + 1000 if b_seed is None else b_seed).standard_normal((1024, 1024)).astype(np.float32)
    return {"a": a, "b": b}


def write_model(repo: Path, state: dict[str, np.ndarray]) -> str:
    save_safetensors(repo / NAME, state)
    return sha256(repo / NAME)


def smudged(repo: Path, rev: str) -> bytes:
    """The file ``rev`` holds, through the ordinary (not direct) smudge."""
    proc = subprocess.run(
        ["git", "cat-file", "--filters", f"{rev}:{NAME}"], cwd=repo, capture_output=True, check=True,
        env={**os.environ, "CORAL_DIRECTCHECKOUTSIZE": "0"},
    )
    return proc.stdout


def assert_checked_out(repo: Path, sha: str | None = None) -> None:
    """The real file is in place (these bytes), status is clean, the index knows its real size."""
    f = repo / NAME
    data = f.read_bytes()
    assert not data.startswith(b"coral-pointer"), "the pointer was left in the work tree"
    if sha is not None:
        assert sha256(f) == sha
    assert data == smudged(repo, "HEAD" if sha is None else "")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
    debug = git(repo, "ls-files", "--debug", NAME)
    assert f"size: {len(data)}\t" in debug or f"size: {len(data)}\n" in debug, debug
    assert not list((repo / ".git" / "coral-direct").glob("*")) if (repo / ".git" / "coral-direct").exists() else True


@pytest.fixture
def rp(tmp_path: Path) -> tuple[Path, list[str]]:
    """A repository with direct checkout at 8 MB and two versions of a 12 MB model (tags v1, v2)."""
    repo = new_repo(tmp_path / "repo")
    git(repo, "config", "coral.directCheckoutSize", DIRECT)
    shas = []
    for v in (1, 2):
        shas.append(write_model(repo, model(v)))
        git(repo, "add", NAME)
        git(repo, "commit", "-qm", f"v{v}")
        git(repo, "tag", f"v{v}")
    return repo, shas


def test_smudge_hands_git_the_pointer_above_the_size(rp: tuple[Path, list[str]]) -> None:
    repo, _shas = rp
    out = subprocess.run(["git", "cat-file", "--filters", f"HEAD:{NAME}"], cwd=repo, capture_output=True, check=True).stdout
    assert out.startswith(b"coral-pointer")
    assert len(smudged(repo, "HEAD")) > 8 << 20


def test_checkout_switch_and_reset_hard(rp: tuple[Path, list[str]]) -> None:
    repo, (s1, s2) = rp
    (repo / NAME).unlink()
    git(repo, "checkout", "--", NAME)
    assert_checked_out(repo, s2)
    git(repo, "checkout", "-q", "v1")
    assert_checked_out(repo, s1)
    git(repo, "switch", "-q", "main")
    assert_checked_out(repo, s2)
    git(repo, "reset", "-q", "--hard", "v1")  # runs no hook at all
    assert_checked_out(repo, s1)
    git(repo, "reset", "-q", "--hard", "v2")
    assert_checked_out(repo, s2)


def test_clone_without_hooks(rp: tuple[Path, list[str]], tmp_path: Path) -> None:
    """A clone without hooks (coral.autoHooks=false: its checkout installs none, docs/remote.md):
    the filter process itself finishes the files when git closes it."""
    repo, (_s1, s2) = rp
    for key, value in {**CONFIG, "coral.directCheckoutSize": DIRECT}.items():
        git(tmp_path, "config", "--global", key, value)
    git(tmp_path, "clone", "-q", "-c", "coral.autoHooks=false", str(repo), "clone")
    clone = tmp_path / "clone"
    assert not (clone / ".git" / "hooks" / "post-checkout").exists()
    assert_checked_out(clone, s2)


def test_merge_of_two_branches(rp: tuple[Path, list[str]]) -> None:
    repo, _ = rp
    git(repo, "checkout", "-q", "-b", "left", "v2")
    write_model(repo, model(2, a_seed=7))
    git(repo, "commit", "-qam", "left changes a")
    git(repo, "checkout", "-q", "-b", "right", "v2")
    write_model(repo, model(2, b_seed=8))
    git(repo, "commit", "-qam", "right changes b")
    git(repo, "merge", "-q", "--no-edit", "left")
    assert_checked_out(repo)
    from safetensors.numpy import load_file

    got = load_file(str(repo / NAME))
    assert np.array_equal(got["a"], model(2, a_seed=7)["a"])
    assert np.array_equal(got["b"], model(2, b_seed=8)["b"])


def test_rebase_and_cherry_pick(rp: tuple[Path, list[str]]) -> None:
    repo, (_s1, s2) = rp
    git(repo, "checkout", "-q", "-b", "topic", "v2")
    s3 = write_model(repo, model(3))
    git(repo, "commit", "-qam", "v3 on topic")
    (repo / "notes.txt").write_text("a note\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "notes")
    git(repo, "checkout", "-q", "main")
    (repo / "other.txt").write_text("main moves on\n")
    git(repo, "add", "other.txt")
    git(repo, "commit", "-qm", "other")
    git(repo, "checkout", "-q", "topic")
    git(repo, "rebase", "-q", "main")
    assert_checked_out(repo, s3)
    git(repo, "checkout", "-q", "-b", "picks", "v2")
    assert_checked_out(repo, s2)
    git(repo, "cherry-pick", "topic~1")
    assert_checked_out(repo, s3)


def test_stash_and_stash_pop(rp: tuple[Path, list[str]]) -> None:
    repo, (_s1, s2) = rp
    s3 = write_model(repo, model(3))
    git(repo, "stash", "-q")
    assert_checked_out(repo, s2)
    git(repo, "stash", "pop", "-q")
    assert sha256(repo / NAME) == s3
    assert git(repo, "status", "--porcelain") == f" M {NAME}\n"


def test_below_the_size_git_writes_the_file(rp: tuple[Path, list[str]]) -> None:
    repo, (s1, _s2) = rp
    git(repo, "config", "coral.directCheckoutSize", "64m")
    git(repo, "checkout", "-q", "v1")
    assert_checked_out(repo, s1)
    assert not (repo / ".git" / "coral-direct").exists()


def test_missing_chunks_leave_the_pointer_and_say_how_to_finish(rp: tuple[Path, list[str]]) -> None:
    repo, (s1, _s2) = rp
    store = repo / ".git" / "coral" / "objects"
    moved = repo.parent / "objects-aside"
    store.rename(moved)
    proc = subprocess.run(["git", "checkout", "-q", "v1"], cwd=repo, capture_output=True)
    assert proc.returncode == 0
    err = proc.stderr.decode()
    assert "git coral pull" in err and NAME in err, err
    assert (repo / NAME).read_bytes().startswith(b"coral-pointer")
    assert git(repo, "status", "--porcelain") == ""  # the pointer is what the index holds
    shutil.copytree(moved, store, dirs_exist_ok=True)  # a racily-clean re-hash may have stored some again
    git(repo, "config", "remote.origin.url", str(repo))  # 'pull' needs a remote: itself will do
    coral(repo, "pull", "origin")
    assert_checked_out(repo, s1)


def test_kill_during_the_direct_write_leaves_the_pointer(rp: tuple[Path, list[str]]) -> None:
    """kill -9 of git and its filter while the temp file is being written: pointer or old file, never partial."""
    repo, (s1, s2) = rp
    for attempt in range(5):
        caught = _checkout_and_kill(repo, "v1" if attempt % 2 == 0 else "main")
        data = (repo / NAME).read_bytes()
        status = git(repo, "status", "--porcelain", "--untracked-files=no")
        head_sha = s1 if git(repo, "rev-parse", "HEAD").strip() == git(repo, "rev-parse", "v1").strip() else s2
        if data.startswith(b"coral-pointer"):
            assert status == ""  # the pointer git wrote: clean, and honest about it
        else:
            assert sha256(repo / NAME) in (s1, s2)
            if status == "":
                assert sha256(repo / NAME) == head_sha
        if caught:
            break
        git(repo, "reset", "-q", "--hard")
    assert caught, "the direct write was never caught in progress"
    assert data.startswith(b"coral-pointer"), "killed mid-write, yet the file is not the pointer"
    # what is left over is finished by the next checkout's hook (the pending list of a dead process)
    git(repo, "checkout", "-q", "v1")
    git(repo, "checkout", "-q", "main")
    assert_checked_out(repo, s2)
    assert not [n for n in os.listdir(repo) if n.endswith(".tmp")]


def _checkout_and_kill(repo: Path, rev: str) -> bool:
    """Start ``git checkout rev``; kill -9 its process group as soon as the temp file exists."""
    proc = subprocess.Popen(["git", "checkout", "-q", rev], cwd=repo, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    caught = False
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if any(n.startswith(f".{NAME}.coral-") and n.endswith(".tmp") for n in os.listdir(repo)):
            os.killpg(proc.pid, signal.SIGKILL)
            caught = True
            break
    proc.wait()
    return caught


def test_existing_post_checkout_hook_is_chained(rp: tuple[Path, list[str]]) -> None:
    repo, (s1, _s2) = rp
    hooks = repo / ".git" / "hooks"
    (hooks / "post-checkout").write_text('#!/bin/sh\necho "theirs $1 $3" >> "$(dirname "$0")/ran.log"\n')
    (hooks / "post-checkout").chmod(0o755)
    coral(repo, "init")
    assert "theirs" in (hooks / "post-checkout.pre-coral").read_text()
    git(repo, "checkout", "-q", "v1")
    assert (hooks / "ran.log").read_text().startswith("theirs ")
    assert_checked_out(repo, s1)


def test_pointers_left_on_purpose_stay_pointers(rp: tuple[Path, list[str]]) -> None:
    """A pointer kept by CORAL_SKIP_SMUDGE is not written when a later smudge (for git diff) meets it."""
    repo, _ = rp
    subprocess.run(["git", "checkout", "-q", "v1"], cwd=repo, check=True, env={**os.environ, "CORAL_SKIP_SMUDGE": "1"})
    f = repo / NAME
    assert f.read_bytes().startswith(b"coral-pointer")
    hour_ago = time.time() - 3600
    os.utime(f, (hour_ago, hour_ago))
    git(repo, "diff", "v1", "v2")
    git(repo, "diff", "v2")
    assert f.read_bytes().startswith(b"coral-pointer")
    assert git(repo, "status", "--porcelain") == ""


def test_refresh_refuses_a_file_that_changed_after_the_write(rp: tuple[Path, list[str]]) -> None:
    """The refresh's clean only hashes: if the bytes are not the recorded pointer's, git records nothing."""
    repo, (s1, s2) = rp
    record = repo / ".git" / "fresh-test"
    v1 = subprocess.run(["git", "cat-file", "-p", f"v1:{NAME}"], cwd=repo, capture_output=True, check=True).stdout
    record.write_bytes(NAME.encode() + b"\0" + v1 + b"\0")
    os.utime(repo / NAME)  # stat changed: update-index must clean the file (which holds v2)
    env = {**os.environ, "CORAL_DIRECT_FRESH": str(record)}
    proc = subprocess.run(["git", "update-index", "-q", "--", NAME], cwd=repo, capture_output=True, env=env)
    assert proc.returncode != 0 and b"changed while coral refreshed" in proc.stderr, proc.stderr
    assert git(repo, "diff", "--cached", "--stat") == ""  # nothing staged: the index still holds v2
    assert_checked_out(repo, s2)
    record.write_bytes(NAME.encode() + b"\0" + subprocess.run(
        ["git", "cat-file", "-p", f"v2:{NAME}"], cwd=repo, capture_output=True, check=True).stdout + b"\0")
    os.utime(repo / NAME)
    subprocess.run(["git", "update-index", "-q", "--", NAME], cwd=repo, check=True, env=env)
    assert_checked_out(repo, s2)
    assert s1 != s2
