"""Push: upload the chunks that pushed commits need, from the ``pre-push`` hook or ``git coral push``.

Objects go up self-contained, bases strictly first. The versions of each chunk position go
newest-first (remote/newestfirst.py): the newest a keyframe, older ones deltas on newer ones within
``coral.remoteMaxChain``, so a clone of the latest needs none of the older versions' objects.
Other objects go as stored when their delta base is on the remote already or goes up in the same
push; a delta whose base is neither is re-encoded as a keyframe (``coral.pushEncoding = reencode``,
the default). ``closure`` sends everything as stored and adds the missing bases; ``keyframes`` sends
keyframes only (no chains on the remote at all). See docs/remote.md for the measurements.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import CoralError, MissingObjectError, UsageError
from ..git.pointers import history_pointers, position_groups, tree_pointers
from ..store.chains import chain_depths
from ..store.chunkstore import ChunkStore
from ..store.objects import unpack_header
from ..ui import transfer_bar
from .backends import resolve
from .base import RemoteStore
from .indexref import GUARD as INDEX_GUARD
from .newestfirst import Encoded, claim, encode_position

ZERO = "0" * 40
BATCH = 32
POSITIONS = 16  # chunk positions encoded per slice (newestfirst.py)
DEFAULT_REMOTE_CHAIN = 2


@dataclass
class PushStats:
    needed: int = 0
    uploaded: int = 0
    reencoded: int = 0
    bytes: int = 0

    def line(self, remote: RemoteStore) -> str:
        return (
            f"uploaded {self.uploaded} of {self.needed} chunk object(s), {self.bytes / 1e6:.1f} MB "
            f"to {remote.describe()}" + (f" ({self.reencoded} re-encoded)" if self.reencoded else "")
        )


def keyframe(store: ChunkStore, cid: str, itemsize: int) -> bytes:
    """Object ``cid`` re-encoded without a delta base (what ``ChunkStore.put`` writes for a new chunk)."""
    return store.keyframe(store.get(cid), itemsize)


def _local(store: ChunkStore, cid: str, remote: RemoteStore, where: dict[str, str]) -> bytes:
    data = store.read_object_local(cid)
    if data is None:
        what = where.get(cid, "a delta base")
        raise MissingObjectError(
            cid, f"{what}; cannot push it to {remote.describe()}: fetch it from where it exists, then push again"
        )
    return data


def push_chunks(
    store: ChunkStore,
    remote: RemoteStore,
    ids: Iterable[str],
    *,
    where: dict[str, str] | None = None,
    mode: str = "reencode",
    max_chain: int = DEFAULT_REMOTE_CHAIN,
    groups: Sequence[Sequence[str]] | None = None,
    keys: set[str] | None = None,
) -> PushStats:
    """Upload every object of ``ids`` the remote lacks, bases before the deltas that use them.

    ``groups`` (chunk positions, versions newest first: ``needed_chunks``): outside ``closure`` mode
    their objects go newest-first (remote/newestfirst.py) — the newest version of each position, and
    any id in ``keys`` (what the pushed tips name), a keyframe, older ones deltas on newer ones.
    Other objects go as stored when their base is on the remote, else as keyframes; in ``reencode``
    mode a delta also goes up as a keyframe when it would end more than ``max_chain`` deltas away
    from a keyframe on the remote (``keyframes`` is ``max_chain=0``).
    """
    if mode not in ("reencode", "closure", "keyframes"):
        raise UsageError(f"coral.pushEncoding = {mode!r}; use 'reencode', 'closure' or 'keyframes'")
    where = where or {}
    needed = list(dict.fromkeys(ids))
    stats = PushStats(needed=len(needed))
    present = remote.has_many(needed)
    todo = [c for c in needed if c not in present]
    if not todo:
        return stats
    if mode == "keyframes":
        max_chain = 0
    elif mode == "closure":
        max_chain = 1 << 30
    grouped = claim(groups, set(todo)) if groups and mode != "closure" else []
    in_groups = {c for m in grouped for c in m}
    total = len(todo)
    todo = [c for c in todo if c not in in_groups]
    base_of: dict[str, str | None] = {}
    for cid in todo:
        base_of[cid] = unpack_header(cid, _local(store, cid, remote, where)).base
    if mode == "closure":
        frontier = [b for b in base_of.values() if b and b not in base_of and b not in present]
        while frontier:
            have = remote.has_many(frontier)
            present |= have
            nxt = []
            for b in dict.fromkeys(frontier):
                if b in have or b in base_of:
                    continue
                base_of[b] = unpack_header(b, _local(store, b, remote, where)).base
                todo.append(b)
                if base_of[b] and base_of[b] not in base_of:
                    nxt.append(base_of[b])
            frontier = nxt
    else:
        extra = {b for b in base_of.values() if b and b not in base_of and b not in present}
        present |= remote.has_many(extra)
    # levels: an object goes up only after the base it is stored against
    depth_of = chain_depths(base_of)
    level = {cid: depth_of(cid) for cid in todo}
    chain: dict[str, int] = {}  # deltas between an object and a keyframe, as stored on the remote

    def local_chain(cid: str) -> int:
        """Deltas from ``cid`` to a keyframe in the local store: a bound for a copy already uploaded."""
        n, cur, seen = 0, cid, set()
        while cur not in chain and cur not in seen:
            seen.add(cur)
            raw = store.loose.read_header(cur)
            base = unpack_header(cur, raw).base if raw else None
            if base is None:
                break
            n, cur = n + 1, base
        return n + chain.get(cur, 0)

    done: set[str] = set(present)
    with transfer_bar(f"pushing to {remote.name}") as bar:
        task = bar.add_task("push", total=total, mb=0.0)

        def sent(objs: dict[str, bytes]) -> None:
            _upload(remote, objs)
            done.update(objs)
            stats.uploaded += len(objs)
            stats.bytes += sum(len(d) for d in objs.values())
            bar.update(task, advance=len(objs), mb=stats.bytes / 1e6)

        if grouped:
            read = lambda c: _local(store, c, remote, where)  # noqa: E731
            for enc in _encode_positions(store, grouped, read, max_chain, keys or set()):
                for e in enc:
                    chain[e.cid] = e.depth
                    stats.reencoded += e.encoded
                for batch_objs in _by_level(enc):
                    sent(batch_objs)
        for lvl in range(max(level.values(), default=-1) + 1):
            batch_ids = [c for c in todo if level[c] == lvl]
            for i in range(0, len(batch_ids), BATCH):
                objs: dict[str, bytes] = {}
                for cid in batch_ids[i : i + BATCH]:
                    data = _local(store, cid, remote, where)
                    hdr = unpack_header(cid, data)
                    depth = 0
                    if hdr.base is not None and hdr.base in done:
                        depth = 1 + (chain[hdr.base] if hdr.base in chain else local_chain(hdr.base))
                    if hdr.base is not None and (hdr.base not in done or depth > max_chain):
                        data = keyframe(store, cid, hdr.itemsize)  # base not on the remote, or chain too long
                        stats.reencoded += 1
                        depth = 0
                    chain[cid] = depth
                    objs[cid] = data
                sent(objs)
    flush = getattr(remote, "flush", None)
    if flush is not None:
        flush()  # a packing store (LFS) publishes what it queued: nothing is visible before this
    return stats


def _encode_positions(
    store: ChunkStore, grouped: list[list[str]], read, max_chain: int, keys: set[str]
) -> Iterator[list[Encoded]]:
    """Per ``POSITIONS`` positions, their objects newest-first (remote/newestfirst.py), encoded on
    two threads ahead of the upload (memory: three slices of encoded objects)."""
    from concurrent.futures import ThreadPoolExecutor

    def job(members: list[str]) -> list[Encoded]:
        return encode_position(store, members, read, max_chain=max_chain, keys=keys)

    workers = min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="coral-push") as pool:
        slices = [grouped[i : i + POSITIONS] for i in range(0, len(grouped), POSITIONS)]
        ahead = []
        for i in range(len(slices)):
            # the positions of a slice run on one thread; ``workers`` slices encode while one uploads
            while len(ahead) <= workers and i + len(ahead) < len(slices):
                ahead.append(pool.submit(lambda sl=slices[i + len(ahead)]: [job(m) for m in sl]))
            yield [e for enc in ahead.pop(0).result() for e in enc]


def _by_level(enc: list[Encoded]) -> Iterator[dict[str, bytes]]:
    """``enc`` (each base before its deltas) in batches of ``BATCH``, keyframes first, then the deltas
    on them, and so on: an object goes up only after its base."""
    level: dict[str, int] = {}
    for e in enc:
        level[e.cid] = 0 if e.base is None or e.base not in level else level[e.base] + 1
    for lvl in sorted(set(level.values())):
        items = [e for e in enc if level[e.cid] == lvl]
        for i in range(0, len(items), BATCH):
            yield {e.cid: e.data for e in items[i : i + BATCH]}


def _upload(remote: RemoteStore, objs: dict[str, bytes]) -> None:
    many = getattr(remote, "upload_many", None)
    if many is not None:
        many(objs)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda kv: remote.upload(*kv), objs.items()))


def needed_chunks(
    cwd: Path, rev_args: list[str], named_by: dict[str, list[int]] | None = None,
    groups: list[list[str]] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Chunk ids named by pointers in the commits ``rev_args`` selects, and a path naming each.

    ``named_by`` (filled when given): per chunk, the file versions (pointers) naming it, numbered so
    that older ones are smaller (rev-list lists newest first) — how a packing remote groups objects
    (remote/packorder.py). ``groups`` (extended when given): the ids per chunk position, newest
    version first — what push_chunks encodes newest-first.
    """
    ids: list[str] = []
    where: dict[str, str] = {}
    pointers = list(history_pointers(cwd, rev_args))
    if groups is not None:
        groups.extend(position_groups(pointers))
    for n, (path, p) in enumerate(pointers):
        for c in sorted(p.chunk_ids()):
            if c not in where:
                where[c] = path
                ids.append(c)
            if named_by is not None:
                named_by.setdefault(c, []).append(-n)
    return ids, where


def tip_chunks(cwd: Path, tips: list[str]) -> set[str]:
    """The chunks the pushed tips' trees name, when several tips go up at once: each tip's versions go
    as keyframes, so a clone of one branch needs none of another's (with one tip, the newest version
    of each position is the tip's already)."""
    if len(set(tips)) < 2:
        return set()
    return {c for tip in dict.fromkeys(tips) for _, p in tree_pointers(cwd, tip) for c in p.chunk_ids()}


def push_mode(repo) -> str:
    return os.environ.get("CORAL_PUSH_ENCODING") or repo.config.get("coral.pushencoding", "reencode")


def push_options(repo) -> dict:
    """``mode`` and ``max_chain`` for push_chunks from git config / environment."""
    return {"mode": push_mode(repo), "max_chain": repo.setting_int("coral.remoteMaxChain", DEFAULT_REMOTE_CHAIN, 0, 255)}


def pre_push(args: list[str], stdin: str) -> int:
    """pre-push step: git gives ``<remote> <url>`` and ``<lref> <lsha> <rref> <rsha>`` lines."""
    from ..git.repo import find_repo

    if os.environ.get("CORAL_SKIP_PUSH") or os.environ.get(INDEX_GUARD):  # the index ref's own push
        return 0
    name = args[0] if args else "origin"
    url = args[1] if len(args) > 1 else None
    try:
        repo = find_repo()
        cwd = repo.worktree or repo.git_dir
        tips, excludes = [], [f"--remotes={name}"]
        for line in stdin.splitlines():
            parts = line.split()
            if len(parts) != 4 or parts[1] == ZERO:
                continue
            tips.append(parts[1])
            if parts[3] != ZERO and repo.pygit.get(parts[3]) is not None:
                excludes.append(parts[3])
        if not tips:
            return 0
        named_by: dict[str, list[int]] = {}
        groups: list[list[str]] = []
        ids, where = needed_chunks(cwd, [*tips, "--not", *excludes], named_by, groups)
        if not ids:
            return 0
        remote = resolve(repo, name, url)
        if hasattr(remote, "order_hint"):
            remote.order_hint(named_by)  # packs hold what the same versions need (packorder.py)
        stats = push_chunks(repo.store, remote, ids, where=where, groups=groups, keys=tip_chunks(cwd, tips),
                            **push_options(repo))
        if stats.uploaded:
            print(f"coral: {stats.line(remote)}", file=sys.stderr)
        return 0
    except CoralError as exc:
        print(f"error: coral: push to '{name}' stopped: {exc}", file=sys.stderr)
        return 1

