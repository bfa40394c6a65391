"""git coral gc: what history can reach survives (with its delta bases), the rest goes after the grace period."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import copy_repo, coral, git, isolated_git, make_state, new_repo, perturb, save_safetensors, sha256

from coral_git.core import pointer as ptr
from coral_git.git.repo import find_repo
from coral_git.maintenance.gc import clean_temp, configured_expire, gc, parse_expire
from coral_git.store.addpack import AddPack
from coral_git.store.packs import inventory

MODEL = "model.safetensors"


def write(repo: Path, seed: int, name: str = MODEL) -> str:
    """Write a small model version; return its sha256."""
    state = make_state(0, layers=2, width=96)
    if seed:
        state = perturb(state, seed)
    save_safetensors(repo / name, state)
    return sha256(repo / name)


def commit(repo: Path, seed: int, msg: str, name: str = MODEL) -> str:
    digest = write(repo, seed, name)
    git(repo, "add", name)
    git(repo, "commit", "-qm", msg)
    return digest


def run_gc(repo: Path, prune: str = "now", **kw):
    """gc in-process (the CLI is exercised by a few tests; this keeps the rest quick)."""
    return gc(find_repo(repo), expire=parse_expire(prune), **kw)


def with_bases(repo: Path, ids: set[str]) -> set[str]:
    store = find_repo(repo).store
    out, todo = set(ids), list(ids)
    while todo:
        base = store.header(todo.pop()).base
        if base and base not in out:
            out.add(base)
            todo.append(base)
    return out


def objects(repo: Path) -> set[str]:
    r = find_repo(repo)
    return set(inventory(r.store))


def chunks_of(repo: Path, rev: str, name: str = MODEL) -> set[str]:
    return ptr.parse(git(repo, "show", f"{rev}:{name}").encode()).chunk_ids()


def checkout_all(repo: Path, expected: dict[str, str], name: str = MODEL) -> None:
    """Check out each commit afresh and compare the smudged file byte for byte."""
    for rev, digest in expected.items():
        (repo / name).unlink(missing_ok=True)
        git(repo, "checkout", "-q", rev, "--", name)
        assert sha256(repo / name) == digest, rev


def age_store(repo: Path, days: float = 30) -> None:
    """Make every stored object look ``days`` old (beyond the default grace period)."""
    old = time.time() - days * 86400
    for d, _, files in os.walk(repo / ".git" / "coral" / "objects"):
        for f in files:
            os.utime(Path(d) / f, (old, old))


def drop_branch(repo: Path, branch: str) -> None:
    git(repo, "branch", "-D", branch)
    git(repo, "reflog", "expire", "--expire=now", "--all")


@pytest.fixture(scope="module")
def history_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], set[str]]:
    """main: v1, v2; branch 'side' (deleted): v3 on top of v1 — so v1's chunks are deltas against v3's."""
    with isolated_git(tmp_path_factory.mktemp("home")):
        return build_history(new_repo(tmp_path_factory.mktemp("tpl") / "repo"))


@pytest.fixture
def history(history_template, tmp_path: Path) -> tuple[Path, dict[str, str], set[str]]:
    template, expected, side = history_template
    return copy_repo(template, tmp_path / "repo"), expected, side


def build_history(repo: Path) -> tuple[Path, dict[str, str], set[str]]:
    expected = {}
    expected["v1"] = commit(repo, 1, "v1")
    git(repo, "tag", "t1")
    git(repo, "checkout", "-qb", "side")
    commit(repo, 3, "v3 on side")
    side_chunks = chunks_of(repo, "HEAD")
    git(repo, "checkout", "-q", "main")
    expected["v2"] = commit(repo, 2, "v2")
    git(repo, "tag", "t2")
    drop_branch(repo, "side")
    return repo, {"t1": expected["v1"], "t2": expected["v2"]}, side_chunks


def test_deleted_branch_goes_only_after_grace_or_prune_now(history) -> None:
    repo, expected, side = history
    before = objects(repo)
    assert side <= before
    coral(repo, "gc")  # default grace: two weeks, everything is younger
    assert objects(repo) == before
    dry = coral(repo, "gc", "--dry-run", "--prune=now")
    assert "would remove" in dry.stdout.decode()
    assert objects(repo) == before
    coral(repo, "gc", "--prune=now")
    after = objects(repo)
    assert after < before
    assert after >= chunks_of(repo, "t1") | chunks_of(repo, "t2")
    checkout_all(repo, expected)
    assert coral(repo, "fsck").returncode == 0


def test_old_objects_go_with_default_grace_and_history_never_depends_on_a_deleted_branch(history) -> None:
    repo, expected, side = history
    store = find_repo(repo).store
    needed = chunks_of(repo, "t1") | chunks_of(repo, "t2")
    # an add never rewrites what is stored: nothing main needs is a delta against side's chunks
    assert not ({store.header(c).base for c in needed} & (side - needed))
    assert any(store.header(c).base in needed for c in side - needed)  # side's v3 sits on main's v1
    age_store(repo)
    run_gc(repo, configured_expire(find_repo(repo)))
    after = objects(repo)
    assert not (side - needed) & after  # every chunk only the deleted branch needed went
    checkout_all(repo, expected)


def test_configured_expire(history) -> None:
    repo, _, _ = history
    before = objects(repo)
    git(repo, "config", "gc.pruneExpire", "now")
    run_gc(repo, configured_expire(find_repo(repo)))
    assert objects(repo) < before
    git(repo, "config", "coral.pruneExpire", "never")  # coral's own setting wins
    commit(repo, 9, "v9")
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    mid = objects(repo)
    run_gc(repo, configured_expire(find_repo(repo)))
    assert objects(repo) == mid


def test_reflog_keeps_objects(repo: Path) -> None:
    commit(repo, 1, "v1")
    digest = commit(repo, 2, "v2")
    old = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "reset", "-q", "--hard", "HEAD~1")  # v2 now only in the reflog
    run_gc(repo, "now")
    assert chunks_of(repo, old) <= objects(repo)
    git(repo, "checkout", "-q", old)
    assert sha256(repo / MODEL) == digest
    git(repo, "checkout", "-q", "main")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    run_gc(repo, "now")
    assert chunks_of(repo, old) <= objects(repo)  # ORIG_HEAD (left by reset) still names v2
    git(repo, "update-ref", "-d", "ORIG_HEAD")
    run_gc(repo, "now")
    # v2 is gone except where v1's chunks (stored as deltas against v2's) need it as a base
    assert objects(repo) == with_bases(repo, chunks_of(repo, "HEAD"))
    assert len(objects(repo) & chunks_of(repo, old)) < len(chunks_of(repo, old))


def test_stash_survives(repo: Path) -> None:
    commit(repo, 1, "v1")
    stashed = write(repo, 5)
    git(repo, "stash")
    write(repo, 6)  # an untracked-file stash too
    (repo / "extra.safetensors").write_bytes((repo / MODEL).read_bytes())
    git(repo, "checkout", "-q", "--", MODEL)
    git(repo, "add", "extra.safetensors")
    git(repo, "stash")
    run_gc(repo, "now")
    git(repo, "stash", "pop")
    assert (repo / "extra.safetensors").exists()
    git(repo, "reset", "-q", "--hard")
    git(repo, "stash", "pop")
    assert sha256(repo / MODEL) == stashed


def test_index_only_version_survives(repo: Path) -> None:
    commit(repo, 1, "v1")
    staged = write(repo, 7)
    git(repo, "add", MODEL)
    run_gc(repo, "now")
    (repo / MODEL).unlink()
    git(repo, "checkout", "--", MODEL)
    assert sha256(repo / MODEL) == staged


def test_in_progress_merge_and_conflict_stages(repo: Path) -> None:
    commit(repo, 1, "v1")
    git(repo, "checkout", "-qb", "other")
    theirs = commit(repo, 2, "v2 on other")
    git(repo, "checkout", "-q", "main")
    commit(repo, 1, "touch", name="notes.safetensors")
    git(repo, "merge", "--no-commit", "--no-ff", "-q", "other")
    git(repo, "branch", "-D", "other")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    # conflicted stages naming pointers that no commit holds
    blobs = {}
    digests = {}
    for stage, seed in ((1, 11), (2, 12), (3, 13)):
        digests[stage] = write(repo, seed, "c.safetensors")
        git(repo, "add", "c.safetensors")
        blobs[stage] = git(repo, "rev-parse", ":c.safetensors").strip()
    info = "0 " + "0" * 40 + "\tc.safetensors\n" + "".join(
        f"100644 {blobs[s]} {s}\tc.safetensors\n" for s in (1, 2, 3)
    )
    git(repo, "update-index", "--index-info", input=info.encode())
    assert "c.safetensors" in git(repo, "diff", "--name-only", "--diff-filter=U")
    run_gc(repo, "now")
    for stage in (1, 2, 3):
        pointer = git(repo, "cat-file", "blob", blobs[stage]).encode()
        out = coral(repo, "smudge", "c.safetensors", input=pointer).stdout
        import hashlib

        assert hashlib.sha256(out).hexdigest() == digests[stage]
    merge_head = git(repo, "rev-parse", "MERGE_HEAD").strip()
    (repo / MODEL).unlink()
    git(repo, "checkout", merge_head, "--", MODEL)
    assert sha256(repo / MODEL) == theirs


def test_linked_worktree_head_and_index(repo: Path, tmp_path: Path) -> None:
    commit(repo, 1, "v1")
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "wtbranch", str(wt))
    git(wt, "checkout", "-q", "--detach")
    detached = commit(wt, 2, "detached in worktree")
    staged = write(wt, 3)
    git(wt, "add", MODEL)
    git(repo, "branch", "-D", "wtbranch")
    git(repo, "reflog", "expire", "--expire=now", "--all")
    run_gc(repo, "now")
    (wt / MODEL).unlink()
    git(wt, "checkout", "--", MODEL)
    assert sha256(wt / MODEL) == staged
    git(wt, "reset", "-q", "--hard")
    assert sha256(wt / MODEL) == detached
    assert coral(repo, "fsck").returncode == 0


def test_all_revisions_check_out_after_gc(repo: Path) -> None:
    expected = {}
    for i in range(4):
        expected[f"v{i}"] = commit(repo, i, f"v{i}")
        git(repo, "tag", f"v{i}")
    git(repo, "checkout", "-qb", "b2", "v1")
    expected["b2"] = commit(repo, 20, "b2")
    git(repo, "checkout", "-q", "main")
    age_store(repo)
    run_gc(repo, "now")
    checkout_all(repo, expected)


def test_stale_temp_files(repo: Path) -> None:
    root = repo / ".git" / "coral"
    old = time.time() - 7200
    stale = [root / "objects" / "ab" / ".tmp-1-abc", root / "tmp" / "spool-x", root / "packs" / ".tmp-pack-1-x"]
    fresh = root / "objects" / "ab" / ".tmp-2-def"
    for f in [*stale, fresh]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    for f in stale:
        os.utime(f, (old, old))
    assert clean_temp(root) == 3
    assert fresh.exists() and not any(f.exists() for f in stale)


def test_temp_pack_of_a_killed_add_goes_at_once_a_live_one_never(repo: Path) -> None:
    """An add's temp pack is as large as what it wrote: gc removes it as soon as its add is dead
    (killed: the kernel dropped its lock), however young, and never while an add writes it, however old."""
    root = repo / ".git" / "coral"
    script = (
        "import os, sys\n"
        "from coral_git.store.addpack import AddPack\n"
        "a = AddPack(sys.argv[1]); a.add('ab' * 16, b'x' * 4096)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(root / "packs")], capture_output=True)
    assert proc.returncode == -9
    (dead,) = (root / "packs").glob(".tmp-pack-*")
    live = AddPack(root / "packs")
    old = time.time() - 7200
    os.utime(live.tmp, (old, old))
    try:
        assert clean_temp(root) == 1
        assert not dead.exists() and live.tmp.exists()
        coral(repo, "gc")  # the command as well
        assert live.tmp.exists()
    finally:
        live.abort()


def test_parse_expire() -> None:
    now = 1_700_000_000.0
    assert parse_expire("now", now) == float("inf")
    assert parse_expire("never", now) == float("-inf")
    assert parse_expire("2.weeks.ago", now) == now - 14 * 86400
    assert parse_expire("3 days ago", now) == now - 3 * 86400
    assert parse_expire("1.hour.ago", now) == now - 3600
    assert parse_expire("@1234", now) == 1234
    assert parse_expire("2024-01-01", now) == 1704067200
    with pytest.raises(Exception, match="cannot understand"):
        parse_expire("yesterday-ish", now)


def test_bad_prune_is_one_line(repo: Path) -> None:
    proc = coral(repo, "gc", "--prune=soonish", check=False)
    assert proc.returncode == 2
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and "cannot understand" in err[0]


def test_storing_present_content_again_freshens_it(history) -> None:
    """A `git add` that finds its chunk already stored (but old and unreachable) renews it, so a gc
    running before the commit does not take it (git's freshen)."""
    repo, _, side = history
    needed = with_bases(repo, chunks_of(repo, "t1") | chunks_of(repo, "t2"))
    age_store(repo)
    store = find_repo(repo).store
    readded, other = sorted(side - needed)[:2]
    assert store.put(store.get(readded), 4) is False  # present: nothing written, only freshened
    run_gc(repo, "2.weeks.ago")
    left = objects(repo)
    assert readded in left and other not in left


def test_missing_git_object_deletes_nothing(history) -> None:
    repo, _, _ = history
    before = objects(repo)
    tree = git(repo, "rev-parse", "t1^{tree}").strip()
    (repo / ".git" / "objects" / tree[:2] / tree[2:]).unlink()
    with pytest.raises(Exception, match="nothing was deleted"):
        run_gc(repo, "now")
    assert objects(repo) == before
