"""Store v2 through real git: discarding a version (never committed, reset away, amended, a deleted
branch, a dropped stash or rebased-away commit) leaves nothing the surviving history depends on, so gc
brings the store within 5% of a twin repository that never had the discarded versions."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import coral, git, make_state, new_repo, perturb, save_safetensors

MODEL = "model.safetensors"
STATES = [make_state(0, layers=3, width=192)]
for _i in range(1, 9):
    STATES.append(perturb(STATES[-1], 100 + _i, scale=2e-3))


def put(repo: Path, k: int, msg: str | None = None) -> str:
    """Write version ``k`` of the model, commit it (unless ``msg`` is None) and return its sha256."""
    save_safetensors(repo / MODEL, STATES[k])
    if msg is not None:
        git(repo, "add", MODEL)
        git(repo, "commit", "-qm", msg)
    return hashlib.sha256((repo / MODEL).read_bytes()).hexdigest()


def store_bytes(repo: Path) -> int:
    root = repo / ".git" / "coral"
    return sum(p.stat().st_size for d in ("objects", "packs") for p in (root / d).rglob("*") if p.is_file())


def forget(repo: Path) -> None:
    """Drop every way git could still reach a discarded commit, then gc now."""
    git(repo, "update-ref", "-d", "ORIG_HEAD", check=False)
    git(repo, "reflog", "expire", "--expire=now", "--all")
    coral(repo, "gc", "--prune=now")


def twin(tmp_path: Path, versions: list[int]) -> int:
    """Store bytes of a repository that committed only ``versions``, in order, then gc'd."""
    repo = new_repo(tmp_path / f"twin-{'-'.join(map(str, versions))}")
    for k in versions:
        put(repo, k, f"v{k}")
    coral(repo, "gc", "--prune=now")
    return store_bytes(repo)


def check_history(repo: Path, expected: dict[str, str]) -> None:
    """Every named revision checks out byte-exact, and fsck --full is clean."""
    for rev, digest in expected.items():
        (repo / MODEL).unlink(missing_ok=True)
        git(repo, "checkout", "-q", rev, "--", MODEL)
        assert hashlib.sha256((repo / MODEL).read_bytes()).hexdigest() == digest, rev
    git(repo, "checkout", "-q", "HEAD", "--", MODEL)
    assert coral(repo, "fsck", "--full").returncode == 0


def within(got: int, want: int) -> None:
    assert got <= 1.05 * want, f"store {got} bytes vs {want} for the surviving history ({got / want:.3f}x)"


Scenario = Callable[[Path], tuple[dict[str, str], list[int]]]


def deleted_branch(repo: Path) -> tuple[dict[str, str], list[int]]:
    exp = {f"HEAD~{2 - i}": put(repo, i, f"v{i}") for i in range(3)}
    git(repo, "checkout", "-qb", "exp")
    for k in range(3, 7):
        put(repo, k, f"exp v{k}")
    git(repo, "checkout", "-q", "main")
    git(repo, "branch", "-D", "exp")
    return exp, [0, 1, 2]


def status_then_discard(repo: Path) -> tuple[dict[str, str], list[int]]:
    exp = {"HEAD": put(repo, 0, "v0")}
    put(repo, 1)
    git(repo, "status", "--porcelain")  # git runs clean: v1's chunks are stored
    git(repo, "checkout", "--", MODEL)
    return exp, [0]


def reset_hard(repo: Path) -> tuple[dict[str, str], list[int]]:
    exp = {}
    for k in range(6):
        exp[k] = put(repo, k, f"v{k}")
    git(repo, "reset", "-q", "--hard", "HEAD~3")
    return {"HEAD~2": exp[0], "HEAD~1": exp[1], "HEAD": exp[2]}, [0, 1, 2]


def amend(repo: Path) -> tuple[dict[str, str], list[int]]:
    a = put(repo, 0, "v0")
    put(repo, 1, "v1")
    b = put(repo, 2)
    git(repo, "commit", "-q", "--amend", "-am", "v2 instead of v1")
    return {"HEAD~1": a, "HEAD": b}, [0, 2]


def gc_every_commit(repo: Path) -> tuple[dict[str, str], list[int]]:
    exp = {}
    for k in range(4):
        exp[k] = put(repo, k, f"v{k}")
        coral(repo, "gc", "--prune=now")
    return {f"HEAD~{3 - k}": d for k, d in exp.items()}, [0, 1, 2, 3]


def stash_drop(repo: Path) -> tuple[dict[str, str], list[int]]:
    exp = {"HEAD": put(repo, 0, "v0")}
    put(repo, 1)
    git(repo, "stash", "-q")
    git(repo, "stash", "drop", "-q")
    return exp, [0]


def rebase_drops(repo: Path) -> tuple[dict[str, str], list[int]]:
    a = put(repo, 0, "v0")
    put(repo, 1, "v1")
    (repo / "notes.txt").write_text("lr 3e-4\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-qm", "notes")
    git(repo, "rebase", "-q", "--onto", "HEAD~2", "HEAD~1")  # drops the v1 commit, replays the notes
    return {"HEAD~1": a, "HEAD": a}, [0]


@pytest.mark.parametrize(
    "scenario", [deleted_branch, status_then_discard, reset_hard, amend, gc_every_commit, stash_drop, rebase_drops]
)
def test_discarded_versions_leave_nothing_behind(tmp_path: Path, scenario: Scenario) -> None:
    repo = new_repo(tmp_path / "repo")
    expected, surviving = scenario(repo)
    forget(repo)
    check_history(repo, expected)
    within(store_bytes(repo), twin(tmp_path, surviving))


def test_objects_reach_the_disk_before_the_pointer_is_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every object an add writes is fsynced (file, then directory) before clean hands git the
    pointer; coral.fsync=false turns it off. The real os.fsync runs; calls are only recorded."""
    import os

    from coral_git.filter.clean import clean
    from coral_git.store.chunkstore import ChunkStore

    synced: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    store = ChunkStore(tmp_path / "coral")
    save_safetensors(tmp_path / "m.safetensors", STATES[0])
    res = clean((tmp_path / "m.safetensors").read_bytes(), store, chunk_bytes=1 << 16)
    written = {os.stat(p).st_ino for p in (tmp_path / "coral" / "objects").rglob("*") if p.is_file()}
    dirs = {os.stat(p).st_ino for p in (tmp_path / "coral" / "objects").iterdir()}
    assert res.new_chunks == len(written) and written <= set(synced) and dirs <= set(synced)
    synced.clear()
    store.fsync = False
    save_safetensors(tmp_path / "m2.safetensors", STATES[1])
    clean((tmp_path / "m2.safetensors").read_bytes(), store, chunk_bytes=1 << 16)
    assert synced == []
