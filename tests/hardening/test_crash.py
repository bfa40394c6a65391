"""Crash safety: kill -9 of the filter during ``git add``, and a full disk.

After every kill: every stored object decodes to its id (and ``git coral fsck`` agrees when it
exists), every committed revision checks out byte-exact, no half-written object is visible, and
retrying the add succeeds. Kill points are spread over the add by watching the store fill up:
before the first object (while git streams the file in), then at fractions of the chunks.

``CORAL_CRASH_MB`` (default 64) sets the model size; ``CORAL_CRASH_POINTS`` (default
``0,0.3,0.7,1.0``) the kill points as fractions of the new chunks the add writes;
``CORAL_CRASH_GC_POINTS`` (default ``0.5,0.9``) the kill times of gc/repack as fractions of an
uninterrupted run.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import checkout_equals, coral, git, small_filesystem, verify_store

MB = int(os.environ.get("CORAL_CRASH_MB", "64"))
POINTS = [float(x) for x in os.environ.get("CORAL_CRASH_POINTS", "0,0.3,0.7,1.0").split(",")]
GC_POINTS = [float(x) for x in os.environ.get("CORAL_CRASH_GC_POINTS", "0.5,0.9").split(",")]


def write_model(path: Path, seed: int, mb: int = MB) -> str:
    """A safetensors file of ``mb`` MiB (1 MiB tensors); version ``seed`` nudges every tensor."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    base = rng.standard_normal((mb, 1 << 18)).astype(np.float32)
    if seed:
        noise = np.random.default_rng(seed).standard_normal(base.shape).astype(np.float32)
        base = base * (1 + 1e-3 * noise)
    save_file({f"layer.{i:03d}": base[i].reshape(512, 512) for i in range(mb)}, str(path))
    return hashlib.sha256(path.read_bytes()).hexdigest()


PACKED_OBJECT = 1 << 18  # stored bytes counted as one object in an add's pack being written (a 1 MiB chunk's delta is more)


def object_files(store: Path) -> int:
    """Loose objects, plus the objects an add's pack being written holds (estimated from its size)."""
    n = sum(p.stat().st_size for p in (store / "packs").glob(".tmp-pack-*")) // PACKED_OBJECT if (store / "packs").is_dir() else 0
    objects = store / "objects"
    if not objects.is_dir():
        return n
    for d in os.scandir(objects):
        if d.is_dir() and len(d.name) == 2:
            n += sum(1 for f in os.scandir(d.path) if not f.name.startswith("."))
    return n


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = [int(k) for k in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            continue
        out.extend(kids)
        todo.extend(kids)
    return out


def filter_pids(git_pid: int) -> list[int]:
    pids = []
    for p in descendants(git_pid):
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if b"filter-process" in cmd and b"git-coral" in cmd and not cmd.startswith(b"/bin/sh"):
            pids.append(p)
    return pids


def add_and_kill(repo: Path, name: str, store: Path, kill_at_objects: int | None, timeout: float = 300) -> tuple[int, str, bool]:
    """Run ``git add name``; kill -9 the filter once the store holds ``kill_at_objects`` more objects.

    ``None`` kills as soon as the filter runs (git is still streaming the file). Returns git's exit
    code, its stderr and whether a kill happened (the add may finish first)."""
    start = object_files(store)
    proc = subprocess.Popen(["git", "add", name], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = False
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        pids = filter_pids(proc.pid)
        if pids and (kill_at_objects is None or object_files(store) - start >= kill_at_objects):
            for p in pids:  # only the filter this test started, by pid
                try:
                    os.kill(p, signal.SIGKILL)
                    killed = True
                except ProcessLookupError:
                    pass
            break
        time.sleep(0.002)
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err.decode(errors="replace"), killed


def test_kill_filter_during_add(repo: Path, tmp_path: Path) -> None:
    """Each retry's objects are on disk and the history checks out, for packed and for loose adds."""
    store = Path(git(repo, "rev-parse", "--git-common-dir").strip())
    store = (repo / store if not store.is_absolute() else store) / "coral"
    name = "model.safetensors"
    shas = [write_model(repo / name, 0)]
    git(repo, "add", name)
    git(repo, "commit", "-qm", "v0")
    survived, kills = 0, 0
    for i, frac in enumerate(POINTS, start=1):
        # kill points alternate between an add that streams into a pack (the default for a file of
        # 64 MiB and more) and one that writes loose objects
        git(repo, "config", "coral.addPackSize", "1m" if i % 2 else "0")
        sha = write_model(repo / name, i)
        # a version writes ~MB keyframes (and rewrites as many bases as deltas)
        rc, err, killed = add_and_kill(repo, name, store, None if frac == 0 else max(1, int(frac * MB)))
        kills += killed
        if killed:
            assert rc != 0, "git add must fail when its filter dies"
            assert "Traceback" not in err
        # nothing half-written is visible, and the committed history is intact
        verify_store(repo, store, fsck=False)
        assert git(repo, "diff", "--cached", "--name-only").strip() in ("", name)
        checkout_equals(repo, "HEAD", name, shas[-1], tmp_path)
        # retrying succeeds and the new version checks out exactly
        git(repo, "add", name)
        git(repo, "commit", "-qm", f"v{i}")
        shas.append(sha)
        survived += 1
    for back, sha in enumerate(reversed(shas)):
        checkout_equals(repo, f"HEAD~{back}", name, sha, tmp_path)
    tmp_left = list(store.rglob(".tmp-*"))
    print(f"kill points {POINTS}: {kills} kills, {survived} survived, {verify_store(repo, store)} objects, {len(tmp_left)} stale temp files")
    assert kills >= len(POINTS) - 1, "most kill points must actually kill the filter mid-add"


# ---------------------------------------------------------------------------------------------
# disk full


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with small_filesystem(tmp_path / "mnt", "60m") as mnt:
        yield mnt


def test_disk_full_is_one_clear_line(repo: Path, small_fs: Path, tmp_path: Path) -> None:
    store = repo / ".git" / "coral"
    # the store (and the filter's spool under it) lives on the small file system
    for p in sorted(store.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    store.rmdir()
    store.symlink_to(small_fs)
    small = "small.safetensors"
    small_sha = write_model(repo / small, 0, mb=4)
    git(repo, "add", small)
    git(repo, "commit", "-qm", "small")
    # an 80 MiB safetensors file streams (no spool) and fills the disk with objects; an 80 MiB file of
    # another format must be spooled first, and the spool is what fills the disk
    for big, where in (("big80.safetensors", "objects"), ("big80.bin", "spool")):
        if where == "objects":
            write_model(repo / big, 1, mb=80)
        else:
            (repo / big).write_bytes(np.random.default_rng(5).bytes(80 << 20))
        proc = subprocess.run(["git", "add", big], cwd=repo, capture_output=True)
        err = proc.stderr.decode(errors="replace")
        assert proc.returncode != 0
        assert "Traceback" not in err and "internal error" not in err, err
        ours = [ln for ln in err.splitlines() if ln.startswith("coral:")]
        assert len(ours) == 1 and "No space left on device" in ours[0], err
        assert ("cannot hold the file" in ours[0]) == (where == "spool"), ours[0]
        # no half-written object is visible; the committed file still checks out
        verify_store(repo, store)
        assert not list(small_fs.rglob(".tmp-*"))
        (repo / big).unlink()
    checkout_equals(repo, "HEAD", small, small_sha, tmp_path)
    # chunks stored before the disk filled are unreferenced: gc reclaims them, and then the same kind
    # of add works again (a 4 MiB model fits)
    coral(repo, "gc", "--prune=now", "--no-pack")
    write_model(repo / "other.safetensors", 2, mb=4)
    git(repo, "add", "other.safetensors")
    git(repo, "commit", "-qm", "other")


# ---------------------------------------------------------------------------------------------
# kill -9 during gc and repack


def _kill_group_after(cmd: list[str], cwd: Path, delay: float) -> tuple[int, bool]:
    """Start ``cmd`` in its own process group, SIGKILL that group after ``delay`` s unless done."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        proc.wait(timeout=delay)
        return proc.returncode, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group this test started, by its id
        proc.wait()
        return proc.returncode, True


def test_kill_during_gc_and_repack(repo: Path, tmp_path: Path) -> None:
    """gc --prune=now and repack --all killed at spread times: history intact, rerun succeeds."""
    import shutil

    name, mb = "m.safetensors", 8
    shas = []
    for v in range(3):
        shas.append(write_model(repo / name, v, mb=mb))
        git(repo, "add", name)
        git(repo, "commit", "-qm", f"v{v}")
    # garbage for gc to sweep: a version that was added, then dropped from the index
    write_model(repo / "junk.safetensors", 9, mb=8)
    git(repo, "add", "junk.safetensors")
    git(repo, "rm", "-q", "--cached", "junk.safetensors")
    (repo / "junk.safetensors").unlink()
    template = tmp_path / "template"
    shutil.copytree(repo, template, symlinks=True)
    coral(template, "gc")  # packs for repack --all to rewrite (gc --prune=now below still sweeps junk)
    full = {}
    for cmd in (["git", "coral", "gc", "--prune=now"], ["git", "coral", "repack", "--all"]):
        probe = tmp_path / "probe"
        shutil.copytree(template, probe, symlinks=True)
        t0 = time.monotonic()
        coral(probe, *cmd[2:])
        full[cmd[2]] = time.monotonic() - t0
        shutil.rmtree(probe)
    kills = 0
    for i, frac in enumerate(GC_POINTS):
        for cmd in (["git", "coral", "gc", "--prune=now"], ["git", "coral", "repack", "--all"]):
            work = tmp_path / f"w{i}-{cmd[2]}"
            delay = frac * full[cmd[2]]
            for attempt in range(4):  # finished before the kill (a busier machine a moment ago)? earlier
                shutil.copytree(template, work, symlinks=True)
                _, killed = _kill_group_after(cmd, work, delay)
                if killed or attempt == 3:
                    break
                shutil.rmtree(work)
                delay /= 2
            kills += killed
            res = coral(work, "fsck", check=False)
            assert res.returncode == 0, (cmd, frac, res.stdout.decode() + res.stderr.decode())
            for back, sha in enumerate(reversed(shas)):
                checkout_equals(work, f"HEAD~{back}", name, sha, tmp_path)
            coral(work, *cmd[2:])  # retrying succeeds
            assert coral(work, "fsck", check=False).returncode == 0
            shutil.rmtree(work)
    print(f"gc/repack kill points {GC_POINTS}: {kills} kills of {2 * len(GC_POINTS)} runs (uninterrupted: {full})")
    assert kills >= len(GC_POINTS)


def test_repack_all_twice_keeps_every_object(repo: Path, tmp_path: Path) -> None:
    """Regression: packs are named by content, so a second repack --all rewrote a pack onto itself and deleted it."""
    sha = write_model(repo / "m.safetensors", 0, mb=4)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "m")
    for _ in range(3):
        coral(repo, "repack", "--all")
        assert coral(repo, "fsck", check=False).returncode == 0
    checkout_equals(repo, "HEAD", "m.safetensors", sha, tmp_path)
