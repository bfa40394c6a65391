"""Chunks on a Git LFS server (real giftless on 127.0.0.1): push, clone, every version byte-exact,
an interrupted push retried, wrong credentials, and git-lfs itself beside coral on the same server."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

from helpers import git, make_state, perturb, repo_with_bare, save_safetensors, sha256
from helpers.lfs_server import LfsServer, lfs_server, lfs_server_auth  # noqa: F401 - fixtures

from coral_git.remote import indexref

CHUNK = "65536"


def setup_global() -> None:
    """`git coral init --global` in this test's HOME (clones need the filter), and a small chunk size."""
    subprocess.run(["git", "coral", "init", "--global"], check=True, capture_output=True)
    subprocess.run(["git", "config", "--global", "coral.chunkSize", CHUNK], check=True)


def make_repo(tmp: Path, lfs_url: str) -> tuple[Path, Path]:
    repo, bare = repo_with_bare(tmp)
    git(repo, "config", "lfs.url", lfs_url)
    return repo, bare


def commit_versions(repo: Path, n: int, width: int = 256) -> list[str]:
    state = make_state(seed=1, width=width)
    shas = []
    for v in range(n):
        save_safetensors(repo / "model.safetensors", state)
        shas.append(sha256(repo / "model.safetensors"))
        git(repo, "add", ".")
        git(repo, "commit", "-qm", f"v{v}")
        state = perturb(state, seed=v + 10)
    return shas


def clone(bare: Path, dest: Path, lfs_url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "clone", "-q", "-c", f"lfs.url={lfs_url}", *args, str(bare), str(dest)],
                          capture_output=True)


def test_push_five_versions_clone_and_check_out_each(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    setup_global()
    repo, bare = make_repo(tmp_path, lfs_server.lfs_url())
    shas = commit_versions(repo, 5)
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=repo, capture_output=True)
    assert push.returncode == 0, push.stderr.decode()
    # the chunks went to the LFS server (packs), not into the bare repository's coral/ folder
    assert not (bare / "coral" / "objects").exists()
    packs = indexref.read(bare, git(bare, "rev-parse", indexref.REF).strip())
    assert packs, "refs/coral/index lists no pack"
    for p in packs:
        assert lfs_server.object_path(p.pack_oid).stat().st_size == p.pack_size
        assert lfs_server.object_path(p.index_oid).stat().st_size == p.index_size
    tree = git(bare, "ls-tree", "-r", "--name-only", indexref.REF).split()
    assert ".gitattributes" in tree and all(n.endswith((".pack", ".idx")) for n in tree if n != ".gitattributes")
    # a clone elsewhere: latest checked out byte-exact, then every older version
    dest = tmp_path / "clone"
    proc = clone(bare, dest, lfs_server.lfs_url())
    assert proc.returncode == 0, proc.stderr.decode()
    assert sha256(dest / "model.safetensors") == shas[-1]
    log = git(dest, "log", "--format=%H", "--reverse").split()
    for commit, want in zip(log, shas, strict=True):
        git(dest, "checkout", "-q", commit)
        assert sha256(dest / "model.safetensors") == want
    assert git(dest, "status", "--porcelain").strip() == ""
    # a second push of a new version adds packs for the new chunks only, on top of the index ref
    state = perturb(make_state(seed=1), seed=99)
    git(dest, "checkout", "-q", "main")
    git(dest, "config", "lfs.url", lfs_server.lfs_url())
    subprocess.run(["git", "coral", "init"], cwd=dest, check=True, capture_output=True)
    save_safetensors(dest / "model.safetensors", state)
    git(dest, "commit", "-qam", "v5")
    push = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=dest, capture_output=True)
    assert push.returncode == 0, push.stderr.decode()
    after = indexref.read(bare, git(bare, "rev-parse", indexref.REF).strip())
    assert set(packs) < set(after)
    assert git(bare, "rev-parse", f"{indexref.REF}^").strip()  # the new index commit has the old as parent


def test_clone_of_one_branch_fetches_its_chunks_only(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    setup_global()
    repo, bare = make_repo(tmp_path, lfs_server.lfs_url())
    shas = commit_versions(repo, 1)
    git(repo, "push", "-q", "origin", "HEAD:main")
    git(repo, "checkout", "-q", "-b", "exp")
    save_safetensors(repo / "model.safetensors", make_state(seed=77))
    git(repo, "commit", "-qam", "exp")
    git(repo, "push", "-q", "origin", "exp")
    dest = tmp_path / "clone"
    env = {k: v for k, v in os.environ.items() if k != "CORAL_QUIET"}
    proc = subprocess.run(["git", "clone", "-c", f"lfs.url={lfs_server.lfs_url()}", "--depth", "1", "-b", "main",
                           str(bare), str(dest)], capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert sha256(dest / "model.safetensors") == shas[0]
    size = (repo / "model.safetensors").stat().st_size
    lines = [ln for ln in proc.stderr.decode().splitlines() if "coral: fetched" in ln]
    assert lines, proc.stderr.decode()
    fetched = sum(float(ln.split(",")[1].split("MB")[0]) for ln in lines)
    assert fetched * 1e6 < 1.3 * size, proc.stderr.decode()  # main's own pack, not exp's too


def test_server_killed_mid_push_then_restarted_retry_completes(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    setup_global()
    repo, bare = make_repo(tmp_path, lfs_server.lfs_url())
    git(repo, "config", "coral.concurrentTransfers", "1")
    shas = commit_versions(repo, 3, width=512)
    env = {**os.environ, "CORAL_WIRE_PACK_BYTES": str(256 << 10)}  # several packs, so the kill lands mid-push
    proc = subprocess.Popen(["git", "push", "-q", "origin", "HEAD:main"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    storage = lfs_server.storage
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(1 for _ in storage.rglob("*") if _.is_file()) < 2:
        time.sleep(0.01)
    lfs_server.kill()
    _, err = proc.communicate(timeout=180)
    assert proc.returncode != 0
    assert "error: coral: push to 'origin' stopped" in err.decode()
    # nothing half-written is visible: git moved no ref, and no index ref points at missing packs
    assert git(bare, "for-each-ref").strip() == ""
    lfs_server.start()
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=repo, capture_output=True, env=env)
    assert push.returncode == 0, push.stderr.decode()
    dest = tmp_path / "clone"
    assert clone(bare, dest, lfs_server.lfs_url()).returncode == 0
    assert sha256(dest / "model.safetensors") == shas[-1]
    git(dest, "checkout", "-q", "HEAD~2")
    assert sha256(dest / "model.safetensors") == shas[0]


def test_wrong_credentials_one_line_naming_the_remote(tmp_path: Path, lfs_server_auth: LfsServer) -> None:  # noqa: F811
    setup_global()
    repo, bare = make_repo(tmp_path, lfs_server_auth.lfs_url())
    helper = tmp_path / "helper.sh"
    helper.write_text("#!/bin/sh\ntest \"$1\" = get && printf 'username=alice\\npassword=wrong\\n'\nexit 0\n")
    helper.chmod(0o755)
    git(repo, "config", "credential.helper", str(helper))
    commit_versions(repo, 1)
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=repo, capture_output=True,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    assert push.returncode != 0
    lines = [ln for ln in push.stderr.decode().splitlines() if ln.startswith("error: coral")]
    assert len(lines) == 1, push.stderr.decode()
    assert "'origin'" in lines[0] and "refused the credentials" in lines[0] and "Traceback" not in push.stderr.decode()
    assert git(bare, "for-each-ref").strip() == ""


def test_git_lfs_pushes_beside_coral_on_the_same_server(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    setup_global()
    url = lfs_server.lfs_url()
    repo, bare = make_repo(tmp_path, url)
    shas = commit_versions(repo, 2)
    git(repo, "push", "-q", "origin", "HEAD:main")
    # a plain git-lfs user works in the same repository and on the same server
    lfs_repo = tmp_path / "lfs-user"
    assert clone(bare, lfs_repo, url).returncode == 0
    # the clone's checkout installed coral's hooks (global install); git-lfs refuses to install beside
    # another tool's hook without --force, and coral's next filter run chains git-lfs's hook again
    git(lfs_repo, "lfs", "install", "--local", "--force")
    git(lfs_repo, "config", "lfs.url", url)
    git(lfs_repo, "lfs", "track", "*.dat")
    payload = os.urandom(300_000)
    (lfs_repo / "data.dat").write_bytes(payload)
    git(lfs_repo, "add", ".gitattributes", "data.dat")
    git(lfs_repo, "commit", "-qm", "lfs data")
    git(lfs_repo, "push", "-q", "origin", "main")
    # a fresh clone gets both: git-lfs smudges data.dat, coral smudges the model
    dest = tmp_path / "both"
    git(tmp_path, "lfs", "install", "--skip-repo")
    proc = clone(bare, dest, url)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (dest / "data.dat").read_bytes() == payload
    assert sha256(dest / "model.safetensors") == shas[-1]
    git(dest, "checkout", "-q", "HEAD~2")
    assert sha256(dest / "model.safetensors") == shas[0]


def test_threads_sharing_one_lfs_remote_get_every_object(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    """Several threads asking one LfsRemote at once (as parallel smudges do) all get their objects."""
    from coral_git.git.repo import find_repo
    from coral_git.remote.backends import resolve
    from coral_git.remote.lfsremote import LfsRemote

    setup_global()
    repo, _bare = make_repo(tmp_path, lfs_server.lfs_url())
    commit_versions(repo, 2)
    git(repo, "push", "-q", "origin", "HEAD:main")
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        remote = resolve(find_repo(), "origin")
    finally:
        os.chdir(cwd)
    assert isinstance(remote, LfsRemote)
    ids = sorted(remote._load())
    assert remote.has_many(ids) == set(ids)
    got: list[dict[str, bytes]] = []
    threads = [threading.Thread(target=lambda part=ids[i::4]: got.append(remote.download(part))) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    merged = {k: v for part in got for k, v in part.items()}
    assert sorted(merged) == ids
    local = subprocess.run(["git", "coral", "fsck"], cwd=repo, capture_output=True)
    assert local.returncode == 0
    from coral_git.store.chunkstore import ChunkStore
    from coral_git.store.objects import LooseObjects

    store = ChunkStore(repo / ".git" / "coral")
    got_store = ChunkStore(tmp_path / "got")  # the downloaded objects alone (the push re-encodes: same chunks)
    for c, data in merged.items():
        LooseObjects(tmp_path / "got" / "objects").write(c, data)
    assert all(got_store.get(c).tobytes() == store.get(c).tobytes() for c in ids)


def test_lazy_checkout_reads_only_needed_ranges_where_range_is_honoured(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    """Pushed through giftless, read back through a Range-honouring server over the same storage: a
    checkout of one version downloads ranges of the packs (merged per pack), not whole packs."""
    from helpers.lfs_range_server import RangeServer

    setup_global()
    repo, bare = make_repo(tmp_path, lfs_server.lfs_url())
    git(repo, "config", "coral.remoteMaxChain", "0")  # every version a keyframe: versions independent
    shas = commit_versions(repo, 3, width=512)
    git(repo, "push", "-q", "origin", "HEAD:main")
    packs = indexref.read(bare, git(bare, "rev-parse", indexref.REF).strip())
    pack_bytes = sum(p.pack_size for p in packs)
    srv = RangeServer(tmp_path / "range", lfs_server.storage / "coral" / "models")
    try:
        dest = tmp_path / "clone"
        proc = subprocess.run(["git", "clone", "-q", "-c", f"lfs.url={srv.lfs_url}", str(bare), str(dest)],
                              capture_output=True, env={**os.environ, "CORAL_SKIP_SMUDGE": "1"})
        assert proc.returncode == 0, proc.stderr.decode()
        n0, before, _ = srv.totals()
        git(dest, "checkout", "-q", "HEAD~2", "--", "model.safetensors")
        n1, after, ranged = srv.totals()
        # batch + index GETs + batch + one probe read + merged ranges: a handful, not one per chunk
        assert n1 - n0 <= 2 + len(packs) + 4, n1 - n0
        assert sha256(dest / "model.safetensors") == shas[0]
        assert ranged, "no 206 answer: the client did not use Range"
        got = after - before
        index_bytes = sum(p.index_size for p in packs)
        # one version of three, plus the indexes: well under the whole packs
        assert got < 0.5 * pack_bytes + index_bytes, (got, pack_bytes)
    finally:
        srv.stop()


def test_index_ref_publish_retries_a_race_and_keeps_both_pushers_packs(tmp_path: Path) -> None:
    """Two pushers: the second publishes against a stale tip, is rejected, re-fetches and retries;
    the remote's index then lists both pushers' packs (the tree is a union, nothing is lost)."""
    bare = tmp_path / "shared.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    a, b = tmp_path / "a", tmp_path / "b"
    for r in (a, b):
        r.mkdir()
        git(r, "init", "-q")
        git(r, "remote", "add", "origin", str(bare))
    pa = indexref.PackRef("a" * 64, 10, "b" * 64, 2)
    pb = indexref.PackRef("c" * 64, 20, "d" * 64, 3)
    indexref.publish(a, "origin", [pa])
    # b believes the remote has no index yet (a stale view): the first push is rejected, then retried
    indexref.publish(b, "origin", [pb], tip=None, known=True)
    tip = git(bare, "rev-parse", indexref.REF).strip()
    assert set(indexref.read(bare, tip)) == {pa, pb}
    assert indexref.read(b, git(b, "rev-parse", indexref.tracking_ref("origin")).strip()) == indexref.read(bare, tip)
