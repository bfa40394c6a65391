"""git coral migrate import of model files committed as plain blobs (no git-lfs involved)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from helpers import coral, git, make_state, perturb, save_safetensors


@pytest.fixture
def plain(tmp_path: Path):
    repo = tmp_path / "plain"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "notes.txt").write_text("hello\n")
    (repo / "ckpt").mkdir()
    s = make_state(3, layers=2, width=96)
    digests = {}
    for e in range(3):
        save_safetensors(repo / "ckpt" / "model.safetensors", s)
        (repo / "weights.bin").write_bytes(os.urandom(4096) * (e + 1))
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"epoch {e}")
        sha = git(repo, "rev-parse", "HEAD").strip()
        digests[sha] = {p: hashlib.sha256((repo / p).read_bytes()).hexdigest() for p in ("ckpt/model.safetensors", "weights.bin")}
        s = perturb(s, e)
    return repo, digests


@pytest.mark.parametrize("streamed", [False, True])
def test_plain_blobs_become_pointers(plain, streamed: bool) -> None:
    repo, digests = plain
    env_before = os.environ.get("CORAL_MIGRATE_IN_MEMORY")
    os.environ["CORAL_MIGRATE_IN_MEMORY"] = "1000" if streamed else str(64 << 20)
    try:
        dry = coral(repo, "migrate", "import", "--dry-run")
        assert b"dry run: 6 file version(s) in 3 commit(s)" in dry.stderr
        assert dry.stdout == b""
        proc = coral(repo, "migrate", "import")
    finally:
        if env_before is None:
            os.environ.pop("CORAL_MIGRATE_IN_MEMORY")
        else:
            os.environ["CORAL_MIGRATE_IN_MEMORY"] = env_before
    pairs = [line.split() for line in proc.stdout.decode().splitlines()]
    assert len(pairs) == 3 and {a for a, _ in pairs} == set(digests)
    assert "\x1b[" not in proc.stderr.decode()  # no progress bar when stderr is not a terminal
    # commits without a .gitattributes got one naming exactly the patterns that matched
    attrs = git(repo, "show", "HEAD:.gitattributes").splitlines()
    assert attrs == ["*.safetensors filter=coral diff=coral merge=coral -text", "*.bin filter=coral diff=coral merge=coral -text"]
    assert git(repo, "show", "HEAD:notes.txt") == "hello\n"
    for old, new in pairs:
        git(repo, "checkout", "-q", new)
        for p, digest in digests[old].items():
            assert git(repo, "cat-file", "-p", f"{new}:{p}").startswith("coral-pointer ")
            assert hashlib.sha256((repo / p).read_bytes()).hexdigest() == digest
    git(repo, "checkout", "-q", "main")
    assert git(repo, "status", "--porcelain") == ""
    # same author, date and message
    for old, new in pairs:
        fmt = "--format=%an %ae %ad %cn %cd %B"
        assert git(repo, "log", "-1", fmt, old) == git(repo, "log", "-1", fmt, new)
    rerun = json.loads(coral(repo, "migrate", "import", "--json").stdout)
    assert rerun["commit_map"] == {} and rerun["files"] == 0


def test_blob_map_is_not_trusted_after_the_store_lost_chunks(plain) -> None:
    repo, digests = plain
    first = coral(repo, "migrate", "import", "--json")
    old_tip, new_tip = list(json.loads(first.stdout)["commit_map"].items())[-1]
    # put the old history back and empty the store: the remembered conversions must be redone
    git(repo, "reset", "-q", "--hard", old_tip)
    for f in (repo / ".git" / "coral" / "objects").rglob("*"):
        if f.is_file():
            f.unlink()
    rep = json.loads(coral(repo, "migrate", "import", "--json").stdout)
    assert rep["files"] == 6
    assert git(repo, "rev-parse", "HEAD").strip() == new_tip  # deterministic: the same ids again
    for p, digest in digests[old_tip].items():
        assert hashlib.sha256((repo / p).read_bytes()).hexdigest() == digest


def test_unreadable_lfs_pointer_is_refused_not_stored_as_text(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    oid = "ab" * 32
    text = f"version https://git-lfs.github.com/spec/v1\next-0-foo sha256:{'cd' * 32}\noid sha256:{oid}\nsize 10\n"
    (repo / "m.safetensors").write_text(text)
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "pointer with an extension")
    head = git(repo, "rev-parse", "HEAD")
    proc = coral(repo, "migrate", "import", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 2 and "--exclude 'm.safetensors'" in err and err.count("\n") == 1
    assert git(repo, "rev-parse", "HEAD") == head
    coral(repo, "migrate", "import", "-X", "m.safetensors")  # then nothing to do, and no failure
    assert git(repo, "show", "HEAD:m.safetensors") == text
