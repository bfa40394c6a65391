"""``git coral gc --remote NAME`` for an S3 store: delete packs nothing reachable needs, repack the
mostly dead ones, with the grace period of local gc.

What is reachable is decided from THIS clone: every commit the git remote's refs name (``git
ls-remote``, which must all be present locally — else gc refuses, since a commit it cannot read may
need any chunk), plus ``refs/remotes/NAME/*``. Kept: the chunks those commits' pointers name, every
object of a pack younger than the grace period (a push in flight uploads its packs before the refs
move), every loose object younger than it, and — closed over — the delta base of every kept object.

Then, per pack older than the grace period: nothing kept in it → its index, then the pack, are
deleted; less than ``REPACK_BELOW`` of its bytes kept → the kept objects are read (ranged GETs),
written into new packs which go up (pack, then index) FIRST, and only then is the old pack deleted.
A reader that listed the old pack just before may fail once and succeed on retry; a push that
relies on an old, unreachable object while gc runs could lose it (the same race ``git gc
--prune=now`` has): do not run it with a short ``--prune`` while others push.
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RemoteError
from ..git.repo import run_git
from ..store.chains import chain_depths
from ..store.objects import HEADER_SIZE, unpack_header
from .push import needed_chunks
from .s3 import S3Remote
from .wirepack import WireEntry

REPACK_BELOW = 0.5  # a pack with less than this share of its bytes still needed is rewritten


@dataclass
class RemoteGcResult:
    """What a remote gc found and did (or, dry, would do)."""

    packs_before: int = 0
    bytes_before: int = 0
    packs_after: int = 0
    bytes_after: int = 0
    kept: int = 0  # objects kept
    young_packs: int = 0  # packs kept whole for the grace period
    deleted_packs: list[str] = field(default_factory=list)
    repacked: list[str] = field(default_factory=list)
    packs_written: int = 0
    loose_deleted: int = 0
    removed_objects: int = 0
    removed_bytes: int = 0
    missing: set[str] = field(default_factory=set)  # reachable chunks the store lacks


def remote_tips(cwd: Path, name: str) -> list[str]:
    """Commits the git remote ``name`` holds: its refs as ``git ls-remote`` lists them (refs/coral/*
    aside) and this clone's ``refs/remotes/NAME/*``. RemoteError when one is not present locally."""
    proc = run_git(["ls-remote", name], cwd)
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RemoteError(f"cannot list the refs of git remote '{name}' ({why[-1] if why else 'git ls-remote failed'}); "
                          "check the remote, then retry")
    tips: list[str] = []
    for line in proc.stdout.decode().splitlines():
        sha, _, ref = line.partition("\t")
        if ref.endswith("^{}") or ref.startswith("refs/coral/"):
            continue
        if run_git(["cat-file", "-e", f"{sha}^{{commit}}"], cwd).returncode != 0:
            if run_git(["cat-file", "-e", sha], cwd).returncode == 0:
                continue  # a tag of a blob or tree: no commit history behind it
            raise RemoteError(
                f"remote '{name}' has {ref} at {sha[:12]}, which this clone does not have; gc cannot know which "
                f"chunks it needs, so nothing was deleted (run 'git fetch {name} {ref}' and retry)"
            )
        tips.append(sha)
    proc = run_git(["for-each-ref", "--format=%(objectname)", f"refs/remotes/{name}/"], cwd)
    tips += proc.stdout.decode().split()
    return list(dict.fromkeys(tips))


def live_chunks(cwd: Path, name: str) -> set[str]:
    """Every chunk some commit of the remote's refs needs."""
    tips = remote_tips(cwd, name)
    if not tips:
        return set()
    ids, _ = needed_chunks(cwd, tips)
    return set(ids)


def gc_s3(remote: S3Remote, live: set[str], expire: float, *, dry_run: bool = False) -> RemoteGcResult:
    """Sweep an S3 store: keep ``live`` chunks and their bases, and whatever is younger than ``expire``."""
    res = RemoteGcResult()
    listing = remote.pack_listing(refresh=True)
    indexes = remote.indexes()
    res.packs_before = len(indexes)
    res.bytes_before = sum(listing[f"{o}.pack"].size for o in indexes)

    def young(oid: str) -> bool:
        return max(listing[f"{oid}.pack"].mtime, listing[f"{oid}.idx"].mtime) >= expire

    copies: dict[str, list[tuple[str, WireEntry]]] = {}
    for oid, index in indexes.items():
        for e in index:
            copies.setdefault(e.cid, []).append((oid, e))
    loose = {}
    if remote.has_loose():
        for rest, item in remote.list("objects/").items():
            if len(rest) == 33 and rest[2] == "/":
                loose[rest[:2] + rest[3:]] = item
    young_packs = {o for o in indexes if young(o)}
    res.young_packs = len(young_packs)
    keep = {c for c in live if c in copies or c in loose}
    keep |= {e.cid for o in young_packs for e in indexes[o]}
    keep |= {c for c, item in loose.items() if item.mtime >= expire}
    res.missing = live - keep

    loose_bases: dict[str, str | None] = {}

    def bases(cid: str) -> list[str]:
        out = [e.base for _, e in copies.get(cid, []) if e.base]
        base = loose_bases.get(cid)
        return [*out, base] if base else out

    frontier = list(keep)
    while frontier:  # level by level, so the headers of kept loose objects are read in parallel
        heads = [c for c in frontier if c in loose and c not in loose_bases]
        if heads:
            async def header(cid: str) -> bytes:
                return await _head_range(remote, remote._key(cid))

            for cid, data in zip(heads, remote._run(remote._gather, header, heads), strict=True):
                loose_bases[cid] = unpack_header(cid, data).base
        nxt = []
        for cid in frontier:
            for b in bases(cid):
                if b not in keep:
                    keep.add(b)
                    nxt.append(b)
        frontier = nxt
    res.kept = len(keep)

    # each kept object has one home: a young pack, else the pack where most bytes are kept
    def kept_share(oid: str) -> float:
        size = listing[f"{oid}.pack"].size
        return sum(e.length for e in indexes[oid] if e.cid in keep) / max(1, size)

    order = sorted(indexes, key=lambda o: (o not in young_packs, -kept_share(o), o))
    home: dict[str, tuple[str, WireEntry]] = {}
    for oid in order:
        for e in indexes[oid]:
            if e.cid in keep and e.cid not in home and e.cid not in loose:
                home[e.cid] = (oid, e)
    homed: dict[str, list[WireEntry]] = {o: [] for o in indexes}
    for oid, e in home.values():
        homed[oid].append(e)
    delete: list[str] = []
    rewrite: list[tuple[str, WireEntry]] = []
    for oid in order:
        if oid in young_packs:
            continue
        size = listing[f"{oid}.pack"].size
        live_bytes = sum(e.length for e in homed[oid])
        dead = [e for e in indexes[oid] if e.cid not in keep]
        if not homed[oid]:
            delete.append(oid)
        elif live_bytes < REPACK_BELOW * size:
            res.repacked.append(oid)
            rewrite += [(oid, e) for e in homed[oid]]
        else:
            continue
        res.removed_objects += len(dead)
        res.removed_bytes += sum(e.length for e in dead)
    res.deleted_packs = delete
    # packs a push left without an index, indexes without a pack, dead loose objects: once old enough
    orphans = [n for n, item in listing.items() if item.mtime < expire and n.endswith((".pack", ".idx"))
               and n[:-5 if n.endswith(".pack") else -4] not in indexes]
    dead_loose = [c for c, item in loose.items() if c not in keep and item.mtime < expire]
    res.loose_deleted = len(dead_loose)
    res.removed_objects += len(dead_loose)
    res.removed_bytes += sum(loose[c].size for c in dead_loose)
    gone = set(delete) | set(res.repacked)
    res.packs_after = res.packs_before - len(gone)
    res.bytes_after = res.bytes_before - sum(listing[f"{o}.pack"].size for o in gone)
    if dry_run:
        return res

    if rewrite:
        before = remote.packs_written
        _repack(remote, rewrite)
        res.packs_written = remote.packs_written - before
        new = remote.pack_listing(refresh=True)
        written = [n for n in new if n.endswith(".pack") and n not in listing]
        res.packs_after += len(written)
        res.bytes_after += sum(new[n].size for n in written)
    # the new packs are up: now the old ones may go, each index before its pack (a pack without an
    # index is invisible; an index without its pack would make readers fail)
    remote.delete([f"packs/{o}.idx" for o in sorted(gone)] + [n for n in orphans if n.endswith(".idx")])
    remote.delete([f"packs/{o}.pack" for o in sorted(gone)] + [n for n in orphans if n.endswith(".pack")])
    remote.delete([f"objects/{c[:2]}/{c[2:]}" for c in sorted(dead_loose)])
    return res


async def _head_range(remote: S3Remote, key: str) -> bytes:
    """The 32-byte header of a loose object (a ranged GET)."""
    remote.requests += 1
    return await remote.fs._cat_file(f"{remote.bucket}/{key}", start=0, end=HEADER_SIZE)


def _repack(remote: S3Remote, rewrite: list[tuple[str, WireEntry]]) -> None:
    """Read the kept objects of mostly dead packs and upload them as new packs (bases first)."""
    tmp = remote._mkdir(remote._tmp_dir())
    spool = tempfile.TemporaryFile(dir=tmp)
    try:
        at: dict[str, tuple[int, int]] = {}
        lock = threading.Lock()
        end = [0]

        def sink(cid: str, data: bytes) -> None:
            with lock:
                off = end[0]
                end[0] += len(data)
                at[cid] = (off, len(data))
            os.pwrite(spool.fileno(), data, off)

        remote.read_entries(rewrite, sink)
        base_of = {e.cid: e.base for _, e in rewrite}
        level = chain_depths(base_of)
        for cid in sorted(at, key=lambda c: (level(c), c)):  # bases first, as a push sends them
            off, n = at[cid]
            remote.upload_many({cid: os.pread(spool.fileno(), n, off)})
        remote.flush()  # every new pack and its index are up before anything is deleted
    finally:
        spool.close()
