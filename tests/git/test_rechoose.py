"""The repacker re-chooses delta bases over the reachable versions of each chunk position (through
real git): newest version a keyframe, older ones deltas on nearby newer ones, chains within
``coral.maxChain``; every version byte-exact afterwards, fsck clean, the store smaller than the
fan-out an add writes, and the next add deltas against the (now keyframe) newest version."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

from helpers import coral, git, make_state, perturb, save_safetensors

from coral_git.store.chunkstore import ChunkStore
from coral_git.store.objects import unpack_header
from coral_git.store.packs import attach, inventory

MODEL = "model.safetensors"
N = 5
STATES = [make_state(0, layers=2, width=128)]
for _i in range(1, N + 1):
    STATES.append(perturb(STATES[-1], 200 + _i, scale=1e-3))


def history(repo: Path, n: int = N, depth: int = 3) -> dict[str, str]:
    """``n`` training-like versions committed with ``coral.maxChain = depth``; ``{rev: sha256}``."""
    git(repo, "config", "coral.maxChain", str(depth))
    (repo / ".coralconfig").write_text("[coral]\n\tchunkSize = 16k\n")
    git(repo, "add", ".coralconfig")
    out = {}
    for k in range(n):
        save_safetensors(repo / MODEL, STATES[k])
        git(repo, "add", MODEL)
        git(repo, "commit", "-qm", f"v{k}")
        out[k] = hashlib.sha256((repo / MODEL).read_bytes()).hexdigest()
    return {f"HEAD~{n - 1 - k}": d for k, d in out.items()}


def check(repo: Path, expected: dict[str, str]) -> None:
    """The oldest and newest versions check out byte-exact; fsck --full rebuilds every reachable
    version and checks it against its pointer's file id."""
    ages = sorted(expected, key=lambda r: int(r[5:] or 0))
    for rev in (ages[0], ages[-1]):
        digest = expected[rev]
        (repo / MODEL).unlink(missing_ok=True)
        git(repo, "checkout", "-q", rev, "--", MODEL)
        assert hashlib.sha256((repo / MODEL).read_bytes()).hexdigest() == digest, rev
    git(repo, "checkout", "-q", "HEAD", "--", MODEL)
    res = coral(repo, "fsck", "--full", check=False)
    assert res.returncode == 0, res.stdout.decode() + res.stderr.decode()


def depths(repo: Path) -> dict[str, int]:
    """The chain depth of every stored object, from the headers (bases followed, not trusted)."""
    store = ChunkStore(repo / ".git" / "coral")
    attach(store)
    bases = {c: unpack_header(c, store.read_object(c)).base for c in inventory(store)}

    def depth(c: str) -> int:
        n = 0
        while bases[c] is not None:
            c, n = bases[c], n + 1  # type: ignore[assignment]
        return n

    return {c: depth(c) for c in bases}


def head_chunks(repo: Path, rev: str = "HEAD") -> list[str]:
    text = git(repo, "cat-file", "blob", f"{rev}:{MODEL}")
    out = []
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] in ("tensor", "skeleton") and parts[-1] != "-":
            out += parts[-1].split(",")
    return out


def stored(repo: Path) -> int:
    root = repo / ".git" / "coral"
    return sum(p.stat().st_size for d in ("objects", "packs") for p in (root / d).rglob("*") if p.is_file())


def test_repack_rechooses_bases_within_depth(repo: Path) -> None:
    expected = history(repo, depth=2)
    coral(repo, "repack", "--keep-bases")
    before = stored(repo)
    assert max(depths(repo).values()) <= 1  # the add's fan-out: every version on one keyframe
    coral(repo, "repack")
    after = stored(repo)
    d = depths(repo)
    assert max(d.values()) == 2, d  # chains used, within coral.maxChain
    assert all(d[c] == 0 for c in head_chunks(repo)), "the newest version is stored as keyframes"
    assert after < 0.99 * before, (after, before)  # same keyframes, nearer bases
    check(repo, expected)
    # a second repack finds every position in shape: nothing encoded again, same bytes
    res = coral(repo, "repack")
    assert b"re-chose" not in res.stderr, res.stderr
    assert stored(repo) == after
    # the next add deltas against the newest version (a keyframe now): one step
    save_safetensors(repo / MODEL, STATES[N])
    git(repo, "add", MODEL)
    git(repo, "commit", "-qm", "next")
    d = depths(repo)
    new = [d[c] for c in head_chunks(repo)]
    assert max(new) == 1 and new.count(1) > len(new) // 2, new  # tensor chunks on the keyframes (the header need not pay)
    expected = {f"HEAD~{int(r[5:]) + 1}" if r != "HEAD" else "HEAD~1": v for r, v in expected.items()}
    # gc --auto packs but re-chooses only when the loose bytes are a fair share of the packs: not here
    res = subprocess.run(["git", "coral", "gc", "--auto"], cwd=repo, capture_output=True, env={**os.environ, "CORAL_GC_AUTO": "1"})
    assert res.returncode == 0 and b"packed" in res.stderr and b"re-chose" not in res.stderr, res.stderr
    assert {depths(repo)[c] for c in head_chunks(repo)} == set(new)
    coral(repo, "gc", "--prune=now")
    d = depths(repo)
    assert max(d.values()) <= 2 and all(d[c] == 0 for c in head_chunks(repo))
    check(repo, expected)
    # --max-chain 0: every version a keyframe
    coral(repo, "repack", "--max-chain", "0")
    assert set(depths(repo).values()) == {0}
    check(repo, expected)


def test_kill_inside_reencoding_leaves_every_version_readable(repo: Path) -> None:
    """kill -9 while the repacker re-encodes (objects slowed down so the kill lands there), then
    after the new pack is in place: every version byte-exact, fsck clean, a rerun completes."""
    expected = history(repo, n=4, depth=2)
    coral(repo, "repack", "--keep-bases")
    packs_dir = repo / ".git" / "coral" / "packs"
    env = {**os.environ, "CORAL_TEST_REBASE_SLOW": "0.02"}
    proc = subprocess.Popen(["git", "coral", "repack"], cwd=repo, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while not any(p.name.startswith(".tmp-pack-") for p in packs_dir.iterdir()):  # re-encoding into the new pack
        assert proc.poll() is None and time.monotonic() < deadline, "repack ended before re-encoding began"
        time.sleep(0.01)
    time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
    proc.wait()
    check(repo, expected)
    coral(repo, "repack")
    assert max(depths(repo).values()) <= 2
    check(repo, expected)


def test_new_path_keeps_its_cross_path_base(repo: Path) -> None:
    """A file added at a new path was delta-encoded on another path's version (basechoice); the
    repacker keeps that base for its newest version instead of making it a keyframe."""
    history(repo, n=1, depth=3)
    save_safetensors(repo / "ft.safetensors", perturb(STATES[0], 999, scale=1e-3))
    git(repo, "add", "ft.safetensors")
    git(repo, "commit", "-qm", "fine-tune at a new path")
    ft = hashlib.sha256((repo / "ft.safetensors").read_bytes()).hexdigest()
    coral(repo, "repack", "--keep-bases")
    before = stored(repo)
    coral(repo, "gc", "--prune=now")
    assert stored(repo) <= before
    text = git(repo, "cat-file", "blob", "HEAD:ft.safetensors")
    ids = [c for line in text.splitlines() if line.startswith("tensor") for c in line.split()[-1].split(",")]
    assert max(depths(repo)[c] for c in ids) == 1
    (repo / "ft.safetensors").unlink()
    git(repo, "checkout", "-q", "HEAD", "--", "ft.safetensors")
    assert hashlib.sha256((repo / "ft.safetensors").read_bytes()).hexdigest() == ft
    assert coral(repo, "fsck", "--full", check=False).returncode == 0
