"""Sharing through a directory remote: push to a bare repository, clone, pull, interrupted pushes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import coral, git, make_state, perturb, save_safetensors, sha256, small_filesystem

from coral_git.core import pointer as ptr
from coral_git.store.chunkstore import ChunkStore
from coral_git.store.objects import LooseObjects


def commit_versions(repo: Path, n: int, *, width: int = 256, name: str = "model.safetensors") -> list[str]:
    """Commit ``n`` versions of a model; return the sha256 of each, oldest first."""
    state = make_state(seed=1, width=width)
    shas = []
    for v in range(n):
        save_safetensors(repo / name, state)
        shas.append(sha256(repo / name))
        git(repo, "add", name)
        git(repo, "commit", "-qm", f"v{v}")
        state = perturb(state, seed=v + 10)
    return shas


def objects_of(store_root: Path) -> set[str]:
    """Object ids in a store: loose ones and packed ones (a push writes packs)."""
    from coral_git.store.packs import PackSource

    return set(LooseObjects(store_root / "objects").ids()) | PackSource(store_root / "packs").ids()


def store_at(root: Path) -> ChunkStore:
    """A directory remote opened as a chunk store (loose objects and packs)."""
    from coral_git.store.packs import attach

    store = ChunkStore(root)
    attach(store)
    return store


def global_config(home_env: dict[str, str] | None = None, chunk_size: int = 65536) -> None:
    """The filter config for every repository of this HOME (clones need it), and the chunk size.

    The chunk size is a setting that clones do not carry, so it is set for the whole HOME too.
    """
    from coral_git.git.install import CONFIG

    env = {**os.environ, **(home_env or {})}
    for key, value in {**CONFIG, "coral.chunkSize": str(chunk_size)}.items():
        subprocess.run(["git", "config", "--global", key, value], env=env, check=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """Built once per module: a repository with 3 versions pushed to a bare ``shared.git`` beside it."""
    from helpers import GIT_ENV

    root = tmp_path_factory.mktemp("template")
    home = root / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n")
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), **GIT_ENV}
    global_config(env)
    repo, bare = root / "repo", root / "shared.git"
    git(root, "init", "-q", "--bare", str(bare), env=env)
    git(root, "init", "-q", str(repo), env=env)
    subprocess.run(["git", "coral", "init"], cwd=repo, env={**os.environ, **env}, check=True, capture_output=True)
    git(repo, "remote", "add", "origin", str(bare), env=env)
    state = make_state(seed=1)
    shas = []
    for v in range(3):
        save_safetensors(repo / "model.safetensors", state)
        shas.append(sha256(repo / "model.safetensors"))
        git(repo, "add", ".", env=env)
        git(repo, "commit", "-qm", f"v{v}", env=env)
        state = perturb(state, seed=v + 10)
    git(repo, "push", "-q", "-u", "origin", "main", env=env)
    return root, shas


@pytest.fixture
def shared(template: tuple[Path, list[str]], tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A fresh copy of the template: (repo, bare remote, sha256 of each version oldest first)."""
    root, shas = template
    shutil.copytree(root / "repo", tmp_path / "repo", symlinks=True)
    shutil.copytree(root / "shared.git", tmp_path / "shared.git", symlinks=True)
    repo, bare = tmp_path / "repo", tmp_path / "shared.git"
    git(repo, "remote", "set-url", "origin", str(bare))
    global_config()
    return repo, bare, shas


def test_push_to_bare_then_clone_every_revision(shared: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    _repo, bare, shas = shared
    remote_objs = objects_of(bare / "coral")
    assert remote_objs, "the pre-push hook uploaded nothing"
    # everything on the remote decodes on its own: bases went up with the deltas
    remote = store_at(bare / "coral")
    for cid in remote_objs:
        remote.get(cid)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    # the push encoded newest-first: the latest version's chunks are keyframes or deltas on each
    # other, so the clone fetched those and nothing of the older versions (locally they are deltas
    # on the oldest version's keyframes)
    latest = set(ptr.parse(git(clone, "cat-file", "blob", "HEAD:model.safetensors").encode()).chunk_ids())
    assert objects_of(clone / ".git" / "coral") == latest
    assert all(remote.header(c).base in latest | {None} for c in latest)
    older = remote_objs - latest
    deltas = [c for c in older if remote.header(c).base is not None]
    assert len(deltas) * 4 >= len(older) * 3, (len(deltas), len(older))  # older versions went as deltas
    revs = git(clone, "rev-list", "--reverse", "HEAD", "--", "model.safetensors").split()
    assert len(revs) == 3
    for rev, want in zip(revs, shas, strict=True):
        git(clone, "checkout", "-q", rev)
        assert sha256(clone / "model.safetensors") == want
    assert git(clone, "status", "--porcelain") == ""


def test_push_from_clone_pull_in_first(shared: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    repo, bare, _shas = shared
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    coral(clone, "init")
    state = perturb(make_state(seed=1), seed=99)
    save_safetensors(clone / "model.safetensors", state)
    new_sha = sha256(clone / "model.safetensors")
    save_safetensors(clone / "other.safetensors", make_state(seed=7, width=64))
    git(clone, "add", ".")
    git(clone, "commit", "-qm", "from the clone")
    proc = subprocess.run(["git", "push", "-q"], cwd=clone, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "uploaded" in proc.stderr
    # pointers only, then `git coral pull` brings the content
    git(repo, "pull", "-q", env={"CORAL_SKIP_SMUDGE": "1"})
    assert (repo / "model.safetensors").read_bytes().startswith(b"coral-pointer 2\n")
    out = coral(repo, "pull")
    assert "checked out 2 file(s)" in out.stderr.decode()
    assert sha256(repo / "model.safetensors") == new_sha
    assert sha256(repo / "other.safetensors") == sha256(clone / "other.safetensors")
    assert git(repo, "status", "--porcelain") == ""


def test_skip_smudge_clone_and_fetch_one_revision(shared: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    _repo, bare, shas = shared
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone), env={"CORAL_SKIP_SMUDGE": "1"})
    assert (clone / "model.safetensors").read_bytes().startswith(b"coral-pointer 2\n")
    assert objects_of(clone / ".git" / "coral") == set()
    out = coral(clone, "fetch", "--rev", "HEAD~2", "--include", "*.safetensors")
    assert "fetched" in out.stderr.decode()
    got = objects_of(clone / ".git" / "coral")
    assert got and got < objects_of(bare / "coral")
    # the old revision now checks out with no remote at all
    git(clone, "remote", "remove", "origin")
    git(clone, "checkout", "-q", "HEAD~2", "--", "model.safetensors")
    assert sha256(clone / "model.safetensors") == shas[0]


def test_push_fails_when_a_chunk_is_missing_locally(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "b.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    commit_versions(repo, 1)
    victim = sorted(objects_of(repo / ".git" / "coral"))[0]
    path = repo / ".git" / "coral" / "objects" / victim[:2] / victim[2:]
    path.unlink()
    git(repo, "remote", "add", "origin", str(bare))
    proc = subprocess.run(["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode != 0
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: coral")]
    assert len(line) == 1 and victim in line[0] and "missing" in line[0] and "origin" in line[0]
    assert "Traceback" not in proc.stderr
    assert git(bare, "for-each-ref") == ""  # git did not update the remote refs


def test_chunk_missing_remotely_is_a_clear_error(shared: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    _repo, bare, _shas = shared
    assert objects_of(bare / "coral")
    shutil.rmtree(bare / "coral" / "packs")
    shutil.rmtree(bare / "coral" / "objects", ignore_errors=True)
    clone = tmp_path / "clone"
    proc = subprocess.run(["git", "clone", "-q", str(bare), str(clone)], capture_output=True, text=True)
    assert proc.returncode != 0
    msgs = [ln for ln in proc.stderr.splitlines() if ln.startswith("coral:")]
    assert msgs and "missing from remote 'origin'" in msgs[0] and "git coral push" in msgs[0]
    assert "Traceback" not in proc.stderr
    f = clone / "model.safetensors"
    assert not f.exists() or f.stat().st_size == 0 or f.read_bytes().startswith(b"coral-pointer")


def test_push_killed_midway_then_retried(repo: Path, tmp_path: Path) -> None:
    bare = tmp_path / "b.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    global_config(chunk_size=4096)
    shas = commit_versions(repo, 2, width=384)
    local = objects_of(repo / ".git" / "coral")
    git(repo, "remote", "add", "origin", str(bare))
    proc = subprocess.Popen(
        ["git", "push", "origin", "main"], cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True, env={**os.environ, "CORAL_REMOTEPACKSIZE": "16384"},  # packs of ~4 objects
    )
    packdir = bare / "coral" / "packs"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if packdir.is_dir() and len(list(packdir.glob("pack-*.pack"))) >= 10:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the push ended before it could be interrupted"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = objects_of(bare / "coral")
    assert 0 < len(partial) < len(local)
    assert git(bare, "for-each-ref") == ""  # killed in pre-push: no ref moved
    remote = store_at(bare / "coral")
    for cid in partial:  # nothing half-written, and every uploaded delta has its base
        remote.get(cid)
    retry = subprocess.run(["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True)
    assert retry.returncode == 0, retry.stderr
    line = next(ln for ln in retry.stderr.splitlines() if "uploaded" in ln)
    uploaded, needed = (int(w) for w in line.split("uploaded ")[1].split(" chunk")[0].split(" of "))
    assert uploaded == needed - len(partial) > 0
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone))
    assert sha256(clone / "model.safetensors") == shas[-1]
    git(clone, "checkout", "-q", "HEAD~1")
    assert sha256(clone / "model.safetensors") == shas[0]


def test_remote_set_and_show(repo: Path, tmp_path: Path) -> None:
    git(repo, "remote", "add", "origin", "https://example.invalid/x.git")
    show = coral(repo, "remote", "show").stdout.decode()
    # an https remote with no coral store keeps its chunks on the remote's Git LFS server (issue 13)
    assert "origin" in show and "https://example.invalid/x.git/info/lfs" in show
    store = tmp_path / "chunks"
    coral(repo, "remote", "set", "origin", str(store))
    assert git(repo, "config", "coral.remote.origin.url").strip() == str(store)
    assert str(store) in coral(repo, "remote", "show", "origin").stdout.decode()
    commit_versions(repo, 1)
    coral(repo, "push")
    assert objects_of(store) == objects_of(repo / ".git" / "coral")


def test_push_of_an_old_revision_is_self_contained(shared: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    from coral_git.git.repo import find_repo
    from coral_git.remote.backends import PathRemote
    from coral_git.remote.push import needed_chunks, push_chunks

    repo, _bare, _shas = shared
    r = find_repo(repo)
    ids, where = needed_chunks(repo, ["HEAD~1", "--not", "HEAD~1^@"])  # the middle version alone
    deltas = [c for c in ids if r.store.header(c).base is not None]
    assert deltas, "the middle version should be stored as deltas against the oldest"
    for mode in ("reencode", "closure", "keyframes"):
        dest = tmp_path / f"store-{mode}"
        stats = push_chunks(r.store, PathRemote("t", dest), ids, where=where, mode=mode)
        got = objects_of(dest)
        remote = store_at(dest)
        for cid in got:  # every uploaded object rebuilds from what is on the remote alone
            remote.get(cid)
        if mode == "closure":
            assert got > set(ids) and stats.reencoded == 0, mode
        else:
            assert got == set(ids) and stats.reencoded == len(deltas), mode
        again = push_chunks(r.store, PathRemote("t", dest), ids, where=where, mode=mode)
        assert again.uploaded == 0


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB file system, unmounted afterwards."""
    with small_filesystem(tmp_path / "small", "2m") as mnt:
        yield mnt


def test_disk_full_on_the_remote_and_locally(shared: tuple[Path, Path, list[str]], small_fs: Path) -> None:
    repo, bare, _shas = shared
    save_safetensors(repo / "big.safetensors", make_state(seed=8, width=512))  # 4 MB: more than fits
    git(repo, "add", "big.safetensors")
    git(repo, "commit", "-qm", "big")
    full = small_fs / "full.git"
    git(small_fs, "init", "-q", "--bare", str(full))
    git(repo, "remote", "add", "full", str(full))
    proc = subprocess.run(["git", "push", "full", "main"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: coral")]
    assert len(lines) == 1 and "is full" in lines[0] and "remote 'full'" in lines[0]
    assert not [p for p in (full / "coral").rglob(".tmp-*")]  # no temp file left behind
    git(repo, "push", "-q", "origin", "main")
    subprocess.run(["rm", "-rf", str(full)], check=True)
    clone = small_fs / "clone"
    proc = subprocess.run(["git", "clone", "-q", str(bare), str(clone)], capture_output=True, text=True)
    assert proc.returncode != 0
    msgs = [ln for ln in proc.stderr.splitlines() if ln.startswith("coral:")]
    # files are smudged concurrently (delay): another file's "fetched" line may come first
    assert any("disk full" in m and "free space" in m for m in msgs), msgs
    big = clone / "big.safetensors"
    assert not big.exists() or big.read_bytes().startswith(b"coral-pointer") or big.stat().st_size == 0


def test_remote_delta_chains_are_bounded(shared: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    from coral_git.git.repo import find_repo
    from coral_git.remote.backends import PathRemote
    from coral_git.remote.push import needed_chunks, push_chunks

    repo, _bare, _shas = shared
    r = find_repo(repo)
    ids, where = needed_chunks(repo, ["HEAD"])
    for bound in (0, 1, 255):
        dest = tmp_path / f"store-{bound}"
        push_chunks(r.store, PathRemote("t", dest), ids, where=where, max_chain=bound)
        remote = store_at(dest)
        depth = {}
        for cid in objects_of(dest):
            n, cur = 0, cid
            while (base := remote.header(cur).base) is not None:
                n, cur = n + 1, base
            depth[cid] = n
            remote.get(cid)
        assert set(depth) == set(ids)
        assert max(depth.values()) == min(bound, 1), bound  # 3 versions added as keyframe, delta, keyframe


def test_push_of_two_branches_sends_each_tip_as_keyframes(shared: tuple[Path, Path, list[str]], tmp_path: Path) -> None:
    """Two refs pushed at once: both tips' versions go up as keyframes, so a clone of either branch
    needs none of the other's objects (issue 13, item 6)."""
    from coral_git.git.repo import find_repo
    from coral_git.remote.backends import PathRemote
    from coral_git.remote.push import needed_chunks, push_chunks, tip_chunks

    repo, _bare, _shas = shared
    git(repo, "checkout", "-q", "-b", "exp", "HEAD~1")
    save_safetensors(repo / "model.safetensors", perturb(make_state(seed=1), seed=77))
    git(repo, "commit", "-qam", "exp")
    tips = [git(repo, "rev-parse", ref).strip() for ref in ("main", "exp")]
    groups: list[list[str]] = []
    ids, where = needed_chunks(repo, tips, None, groups)
    keys = tip_chunks(repo, tips)
    dest = tmp_path / "store"
    stats = push_chunks(find_repo(repo).store, PathRemote("t", dest), ids, where=where, groups=groups, keys=keys)
    assert stats.uploaded == len(set(ids))
    remote = store_at(dest)
    for tip in tips:
        named = set(ptr.parse(git(repo, "cat-file", "blob", f"{tip}:model.safetensors").encode()).chunk_ids())
        assert named <= keys and all(remote.header(c).base is None for c in named), tip
    older = set(ids) - keys
    assert older and any(remote.header(c).base is not None for c in older)
    for cid in ids:
        remote.get(cid)
