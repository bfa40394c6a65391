"""``git coral gc``: keep every chunk some reachable pointer needs (and every delta base of a kept
chunk), remove the rest once it is older than the grace period, and gather loose objects into packs.

The history walk runs without the store lock; marking the delta bases and sweeping run under
``ChunkStore.lock()``, which is also what re-encoding a base as a delta takes, so a base rewritten
by a concurrent ``git add`` is seen with its new base. Objects younger than the grace period are
kept together with their bases, so a ``git add`` that has not been committed yet is never robbed.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..errors import CorruptObjectError, StoreError, UsageError
from ..git import reachability
from ..git.repo import Repo, git_value
from ..store import packs
from ..store.addpack import TMP_PREFIX, writer_gone
from ..store.chunkstore import forget_freshened, freshened
from ..store.objects import HEADER_SIZE, unpack_header
from ..store.rebase import RebaseResult
from . import rebase as rechoosing

DEFAULT_EXPIRE = "2.weeks.ago"
TMP_AGE = 3600.0
Progress = Callable[[str, int, int], None]

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 30 * 86400, "year": 365 * 86400}
_AGO = re.compile(r"(\d+)[. ]*(second|minute|hour|day|week|month|year)s?[. ]*ago", re.I)


def parse_expire(text: str, now: float | None = None) -> float:
    """A git-style expiry date as a unix time: ``now``, ``never``, ``2.weeks.ago``, ``3 days ago``,
    ``@<unix time>``, or an ISO date/time (UTC unless it says otherwise)."""
    now = time.time() if now is None else now
    t = text.strip().lower()
    if t in ("now", "all"):
        return float("inf")
    if t in ("never", "false"):
        return float("-inf")
    m = _AGO.fullmatch(t)
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    if t.startswith("@") and t[1:].isdigit():
        return float(t[1:])
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(f"cannot understand the date {text!r}; use e.g. 'now', '2.weeks.ago' or '2024-05-01'") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def configured_expire(repo: Repo) -> str:
    """``coral.pruneExpire``, else ``gc.pruneExpire``, else two weeks."""
    value = repo.config.get("coral.pruneexpire")
    if value:
        return value
    return git_value(["config", "--get", "gc.pruneExpire"], repo.common_dir) or DEFAULT_EXPIRE


@dataclass
class GcResult:
    """What gc found and did (or would do, with ``dry_run``)."""

    reachable: int = 0  # chunks named by reachable pointers
    kept: int = 0  # objects kept (reachable, their bases, young ones)
    young: int = 0  # unreachable objects kept only because they are within the grace period
    missing: set[str] = field(default_factory=set)  # reachable chunks the store lacks
    removed: list[tuple[str, int]] = field(default_factory=list)  # (id, stored bytes)
    objects_before: int = 0
    objects_after: int = 0
    files_before: int = 0
    files_after: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    repack: packs.RepackResult | None = None
    tmp_removed: int = 0
    rebased: int = 0  # reachable objects re-encoded because their delta base was discarded
    rechosen: RebaseResult | None = None  # bases re-chosen over the reachable versions (repacker)
    rechoose_skipped: str = ""  # why bases were not re-chosen although asked
    broken_pointers: dict[str, str] = field(default_factory=dict)

    @property
    def removed_bytes(self) -> int:
        return sum(n for _, n in self.removed)


def mark(
    store, reach: reachability.Reachable, inv: dict[str, packs.Stored], expire: float, *, rebase: bool = True
) -> tuple[set[str], int, set[str], set[str]]:
    """Objects to keep, how many are kept only for being young, reachable chunks missing, and the
    reachable objects to re-encode.

    Kept: what reachable pointers name, and objects younger than ``expire`` (an add not committed
    yet) with their whole base chains. A reachable object whose base is not otherwise kept (the
    version it was delta-encoded against was discarded: amended, reset away, a deleted branch) is
    returned in the last set, to be re-encoded as a keyframe so that its base can go — unless
    ``rebase`` is False, when the base is kept instead. Bases are followed through every stored
    copy of an object. Raises StoreError when a kept object's header cannot be read (its base is
    unknown, so nothing may be deleted until fsck has set it aside).
    """
    live = reach.chunk_ids()
    fresh = freshened(store, expire)
    young = {c for c, s in inv.items() if c not in live and (s.mtime >= expire or c in fresh)}
    keep = {c for c in inv if c in live} | young
    unreadable: list[str] = []

    def bases(cid: str) -> Iterator[str]:
        s = inv.get(cid)
        for data in _header_copies(store, s) if s is not None else ():
            try:
                base = unpack_header(cid, data).base
            except CorruptObjectError:
                unreadable.append(cid)
                continue
            if base is not None:
                yield base

    def close_over(stack: list[str]) -> None:
        while stack:
            for base in bases(stack.pop()):
                if base not in keep:
                    keep.add(base)
                    stack.append(base)

    close_over(list(young))
    rebased: set[str] = set()
    for cid in sorted(keep - young):
        if any(b not in keep for b in bases(cid)):
            rebased.add(cid)
    if not rebase:
        close_over(list(rebased))
        rebased = set()
    if unreadable:
        raise StoreError(
            f"{len(unreadable)} object(s) gc must keep have unreadable headers (e.g. {unreadable[0]}); "
            "run 'git coral fsck' to set them aside, then gc again"
        )
    return keep, len(young), live - inv.keys(), rebased


def _header_copies(store, s: packs.Stored) -> list[bytes]:
    out = []
    if s.loose is not None:
        data = packs.read_loose(store, s.cid, HEADER_SIZE)
        if data is not None:
            out.append(data)
    for p, e in s.packed or []:
        try:
            out.append(p.read_header(e))
        except CorruptObjectError:
            out.append(b"")
    return out


def gc(
    repo: Repo,
    *,
    expire: float,
    dry_run: bool = False,
    pack: bool = True,
    progress: Progress | None = None,
    rechoose: str = "yes",
) -> GcResult:
    """Mark and sweep the store of ``repo``; objects older than ``expire`` (unix time) may go.

    With ``pack``, bases are then re-chosen over the reachable versions (``rechoose``: "yes",
    "auto" — only when :func:`rebase.auto_worth_it` — or "no"), after the loose objects are packed."""
    reach, files, _ = reachability.walk(repo.common_dir, progress)
    if reach.missing:
        raise StoreError(
            f"git object {reach.missing[0]} is missing, so gc cannot know which chunks it needs; "
            "nothing was deleted (run 'git fsck')"
        )
    store = repo.store
    src = packs.attach(store)
    res = GcResult(reachable=0, broken_pointers=dict(reach.broken))
    if not dry_run:
        res.tmp_removed = clean_temp(repo.store_root)  # free space first: a full disk is a reason to gc
    with store.lock():
        src.rescan(force=True)
        inv = packs.inventory(store, src)
        res.objects_before = len(inv)
        res.files_before, res.bytes_before = packs.store_files(store, src)
        if progress:
            progress("marking", 0, len(inv))
        keep, res.young, res.missing, rebase = mark(store, reach, inv, expire, rebase=pack)
        res.rebased = len(rebase)
        res.reachable = len(reach.chunk_ids())
        res.kept = len(keep & inv.keys())
        garbage = {c for c in inv if c not in keep}
        res.removed = sorted((c, inv[c].size) for c in garbage)
        if progress:
            progress("marking", len(inv), len(inv))
        if dry_run:
            res.objects_after = res.objects_before - len(garbage)
            res.files_after, res.bytes_after = res.files_before, res.bytes_before
            return res
        on_item = (lambda k, n: progress("packing", k, n)) if progress else None
        rechoose_now = pack and (rechoose == "yes" or (rechoose == "auto" and rechoosing.auto_worth_it(store)))
        # before packing needs any space (a nearly full disk); the chains of objects to re-encode stay
        # until they are re-encoded
        freed = drop_loose(store, inv, garbage - chains_of(store, rebase))
        try:
            res.repack = packs.repack(
                store, drop=garbage, loose=pack, max_chain=store.max_chain if pack else None, rekey=rebase, on_item=on_item
            )
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise StoreError(
                f"gc removed {freed} unreferenced loose object(s) but packing needs more free space "
                f"({exc.strerror}); free space and run gc again, or use 'git coral gc --no-pack'"
            ) from None
        if rechoose_now:
            try:
                res.rechosen = rechoosing.rechoose(store, reach, files, progress=progress)
            except OSError as exc:  # the new packs could not be written: the old ones are all still there
                if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                res.rechoose_skipped = f"re-choosing bases needs more free space ({exc.strerror})"
        forget_freshened(store, expire)
        res.objects_after = len(inv) - len(garbage)
        res.files_after, res.bytes_after = packs.store_files(store, src)
    return res


def chains_of(store, cids: set[str]) -> set[str]:
    """Every object the decode of ``cids`` reads (their delta bases, recursively)."""
    out: set[str] = set()
    for cid in cids:
        cur: str | None = cid
        while cur is not None and cur not in out:
            out.add(cur)
            try:
                hdr = packs.read_header(store, cur)
            except CorruptObjectError:
                break
            cur = hdr.base if hdr is not None else None
    return out


def drop_loose(store, inv: dict[str, packs.Stored], garbage: set[str]) -> int:
    """Delete the loose copies of ``garbage`` now (the caller holds the store lock), each only if
    it is still the file the inventory saw (an add may have freshened it since). Returns how many
    went. Run before packing, so that gc frees space before it needs any."""
    n = 0
    for cid in garbage:
        s = inv.get(cid)
        if s is not None and s.loose is not None and packs._unlink_if_same(packs.loose_path(store, cid), s.loose):
            n += 1
    return n


def clean_temp(root: Path, age: float = TMP_AGE, now: float | None = None) -> int:
    """Remove spool files under ``tmp/`` and ``.tmp-*`` files anywhere in the store older than ``age``;
    an add's temp pack (as large as what the add wrote) as soon as no add holds it, and never while one does."""
    now = time.time() if now is None else now
    removed = 0
    if not root.is_dir():
        return 0
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = [n for n in dirnames if n != "lost-found"]
        in_tmp = d == root / "tmp" or (root / "tmp") in d.parents
        for name in filenames:
            if not (in_tmp or name.startswith(".tmp-")):
                continue
            f = d / name
            if name.startswith(TMP_PREFIX):
                gone = writer_gone(f)
                if gone is not None:
                    if gone:
                        f.unlink(missing_ok=True)
                        removed += 1
                    continue
            try:
                if now - f.lstat().st_mtime > age:
                    f.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
