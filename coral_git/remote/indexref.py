"""The location index of an LFS chunk store, carried by git itself on the ref ``refs/coral/index``.

Which wire pack holds which chunk must be findable by a fresh clone without a coral-specific server.
So every push that uploads packs also pushes a commit on ``refs/coral/index`` whose tree lists, for
each pack, two **Git LFS pointer files**::

    .gitattributes                 packs/** filter=lfs diff=lfs merge=lfs -text
    packs/<pack sha256>.pack       LFS pointer to the pack
    packs/<pack sha256>.idx        LFS pointer to its wire index (see wirepack.py)

Being ordinary LFS pointers committed on a ref, the packs and indexes are *referenced* objects, which
hosts that prune or refuse unreferenced LFS objects (GitLab, GitHub) keep. The commit is pushed from the
pre-push step with ``CORAL_INDEX_PUSH=1`` in the environment, so that inner push does not run the
step again. A reader fetches the ref on demand into ``refs/coral/remotes/<remote>/index``.
Each commit's tree is the union of its parent's (the remote's tip) and the new packs, so two pushers
racing only retry: nothing is lost.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import CoralError
from ..git.repo import run_git

REF = "refs/coral/index"
GUARD = "CORAL_INDEX_PUSH"  # set while the pre-push step pushes the index ref itself
ATTRIBUTES = b"packs/** filter=lfs diff=lfs merge=lfs -text\n"
LFS_SPEC = "https://git-lfs.github.com/spec/v1"
_POINTER = re.compile(rb"^version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n$")
_ENTRY = re.compile(r"^([0-9a-f]{64})\.(pack|idx)$")


class IndexRefError(CoralError):
    exit_code = 3


@dataclass(frozen=True, slots=True)
class PackRef:
    """One pack on the server and its wire index, both as (sha256 oid, size)."""

    pack_oid: str
    pack_size: int
    index_oid: str
    index_size: int


def tracking_ref(remote: str) -> str:
    """Where the remote's index ref is fetched to (a URL given as remote becomes a safe name)."""
    return f"refs/coral/remotes/{re.sub(r'[^A-Za-z0-9._-]+', '_', remote).strip('.') or 'remote'}/index"


def _git(cwd: Path, *args: str, input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_git(args, cwd, input=input, env=env)


def _out(proc: subprocess.CompletedProcess, what: str) -> str:
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise IndexRefError(f"{what} failed: {msg[-1] if msg else proc.returncode}")
    return proc.stdout.decode().strip()


def fetch(cwd: Path, remote: str) -> str | None:
    """Fetch the remote's ``refs/coral/index`` into its tracking ref; its commit id, or None if it has none."""
    dst = tracking_ref(remote)
    proc = _git(cwd, "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
                remote, f"+{REF}:{dst}")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace")
        if "couldn't find remote ref" in err or "could not find remote ref" in err:
            return None
        line = (err.strip().splitlines() or [str(proc.returncode)])[-1]
        raise IndexRefError(f"cannot fetch {REF} from git remote '{remote}': {line}")
    return _out(_git(cwd, "rev-parse", "--verify", dst), f"git rev-parse {dst}")


def read(cwd: Path, commit: str | None) -> list[PackRef]:
    """The packs listed in the tree of ``commit`` (pointer files read in one ``cat-file --batch``)."""
    if commit is None:
        return []
    proc = _git(cwd, "ls-tree", "-z", f"{commit}:packs")
    if proc.returncode != 0:
        return []
    names: dict[str, str] = {}
    for item in proc.stdout.decode().split("\0"):
        if item:
            meta, _, name = item.partition("\t")
            names[name] = meta.split()[2]
    blobs = sorted(set(names.values()))
    pointers: dict[str, tuple[str, int]] = {}
    if blobs:
        out = _git(cwd, "cat-file", "--batch", input="".join(b + "\n" for b in blobs).encode()).stdout
        pos = 0
        for b in blobs:
            nl = out.index(b"\n", pos)
            size = int(out[pos:nl].split()[2])
            m = _POINTER.match(out[nl + 1 : nl + 1 + size])
            pos = nl + 1 + size + 1
            if m:
                pointers[b] = (m.group(1).decode(), int(m.group(2)))
    packs: dict[str, dict[str, tuple[str, int]]] = {}
    for name, blob in names.items():
        m = _ENTRY.match(name)
        if m and blob in pointers:
            packs.setdefault(m.group(1), {})[m.group(2)] = pointers[blob]
    out_refs = []
    for oid, kinds in sorted(packs.items()):
        if "pack" in kinds and "idx" in kinds and kinds["pack"][0] == oid:
            out_refs.append(PackRef(oid, kinds["pack"][1], *kinds["idx"]))
    return out_refs


def pointer(oid: str, size: int) -> bytes:
    return f"version {LFS_SPEC}\noid sha256:{oid}\nsize {size}\n".encode()


def _blob(cwd: Path, data: bytes) -> str:
    return _out(_git(cwd, "hash-object", "-w", "--stdin", input=data), "git hash-object")


def commit(cwd: Path, parent: str | None, packs: list[PackRef]) -> str:
    """A commit whose tree is ``parent``'s plus ``packs`` (LFS pointer files), with ``parent`` as parent."""
    entries: dict[str, str] = {}
    if parent is not None:
        proc = _git(cwd, "ls-tree", "-z", f"{parent}:packs")
        if proc.returncode == 0:
            for item in proc.stdout.decode().split("\0"):
                if item:
                    meta, _, name = item.partition("\t")
                    entries[name] = meta.split()[2]
    for p in packs:
        entries[f"{p.pack_oid}.pack"] = _blob(cwd, pointer(p.pack_oid, p.pack_size))
        entries[f"{p.pack_oid}.idx"] = _blob(cwd, pointer(p.index_oid, p.index_size))
    sub = "".join(f"100644 blob {b}\t{n}\0" for n, b in sorted(entries.items()))
    sub_tree = _out(_git(cwd, "mktree", "-z", input=sub.encode()), "git mktree")
    attrs = _blob(cwd, ATTRIBUTES)
    root = _out(_git(cwd, "mktree", "-z", input=f"100644 blob {attrs}\t.gitattributes\x00040000 tree {sub_tree}\tpacks\x00".encode()),
                "git mktree")
    env = {**os.environ, "GIT_AUTHOR_NAME": "coral", "GIT_AUTHOR_EMAIL": "coral@localhost",
           "GIT_COMMITTER_NAME": "coral", "GIT_COMMITTER_EMAIL": "coral@localhost"}
    args = ["commit-tree", root, "-m", f"coral: {len(packs)} pack(s)"]
    if parent is not None:
        args += ["-p", parent]
    return _out(_git(cwd, *args, env=env), "git commit-tree")


def publish(cwd: Path, remote: str, packs: list[PackRef], attempts: int = 4, tip: str | None = None,
            known: bool = False) -> str:
    """Push a commit adding ``packs`` to the remote's ``refs/coral/index``; retried on a race.
    ``known``: ``tip`` was just fetched (None = the remote has no index yet), so skip one fetch."""
    last = ""
    for attempt in range(attempts):
        if attempt or not known:
            tip = fetch(cwd, remote)
        new = commit(cwd, tip, packs)
        env = {**os.environ, GUARD: "1"}
        proc = _git(cwd, "push", "--quiet", "--no-verify", remote, f"{new}:{REF}", env=env)
        if proc.returncode == 0:
            _git(cwd, "update-ref", tracking_ref(remote), new)
            return new
        lines = proc.stderr.decode(errors="replace").strip().splitlines() or ["?"]
        last = next((ln.strip() for ln in lines if ln.lstrip().startswith(("!", "error:", "fatal:"))), lines[-1])
        if "rejected" not in proc.stderr.decode(errors="replace") and "fetch first" not in last:
            break
    raise IndexRefError(f"cannot push {REF} to git remote '{remote}': {last}")
