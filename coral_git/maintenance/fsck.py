"""``git coral fsck``: check that every reachable pointer parses and every stored object decodes to
its id; report what is missing or damaged together with the files and revisions that need it.

Each object is decoded once: keyframes first, then the deltas on top of them, depth first, so the
cost is one decode per object and memory is one chunk per level of the deepest chain. Damaged
objects are moved to ``coral/lost-found/`` (a damaged pack as a whole, after its sound objects
were copied into a new pack), never deleted.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import CorruptObjectError, StoreError
from ..git import reachability
from ..git.repo import Repo
from ..store import packs
from ..store.chunkstore import chunk_id
from ..store.codecs import codec
from ..store.objects import HEADER_SIZE, ObjectHeader

HARD_CHAIN = 256
Progress = Callable[[str, int, int], None]


@dataclass
class Problem:
    """One thing fsck found wrong."""

    kind: str  # missing | corrupt | unreadable | broken-pointer | bad-pack | pointer-size | long-chain
    what: str  # object id, blob id or pack name
    detail: str
    needed_by: list[tuple[str, str, str]] = field(default_factory=list)  # (revision, path, part)
    moved_to: str | None = None
    warning: bool = False


@dataclass
class FsckResult:
    """Counts of what was checked, and every problem found."""

    objects: int = 0
    pointers: int = 0
    commits: int = 0
    reachable_chunks: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if not p.warning]


def fsck(repo: Repo, *, move: bool = True, full: bool = False, progress: Progress | None = None) -> FsckResult:
    """Check the repository's pointers and store; set damaged objects aside when ``move``.

    ``full`` also rebuilds every reachable file and compares it with its pointer's file id: the only
    check that catches a pointer whose chunks all exist but were put together wrongly (a version 1
    pointer mixed from two versions, or edited to name other chunks of the right sizes).
    """
    reach = reachability.reachable(repo.common_dir, progress)
    res = FsckResult(pointers=len(reach.pointers), commits=len(reach.commits))
    for blob, why in reach.broken.items():
        uses = reach.uses.get(blob, [])
        res.problems.append(Problem("broken-pointer", blob, why, [(r, p, "pointer") for r, p in uses]))
    live = reach.chunk_ids()
    res.reachable_chunks = len(live)
    store = repo.store
    src = packs.attach(store)
    lost = repo.store_root / "lost-found"
    moved: dict[str, str] = {}
    with store.lock():
        src.rescan(force=True)
        for path, why in src.broken.items():
            where = _move(path, lost, path.name) if move else None
            res.problems.append(Problem("bad-pack", path.name, why, moved_to=where))
        inv = packs.inventory(store, src)
        res.objects = len(inv)
        bad_entries: dict[Path, list[tuple[str, str]]] = {}
        for p, e in src.entries():  # every copy in a pack, shadowed duplicates too
            try:
                p.read_entry(e)
            except CorruptObjectError as exc:
                bad_entries.setdefault(p.path, []).append((e.cid, _detail(exc)))
        headers, corrupt = _headers(store, inv)
        for cid, why in _pack_failures(bad_entries, inv).items():
            corrupt.setdefault(cid, why)
        corrupt.update(_decode_all(store, inv, headers, corrupt, progress))
        unreadable = _dependents(headers, corrupt, inv)
        if move:
            moved = _set_aside(store, src, inv, corrupt, bad_entries, lost)
    needed = reach.needed_by(set(corrupt) | set(unreadable) | (live - inv.keys()))
    for cid, why in sorted(corrupt.items()):
        res.problems.append(Problem("corrupt", cid, why, needed.get(cid, []), moved.get(cid)))
    for cid, why in sorted(unreadable.items()):
        res.problems.append(Problem("unreadable", cid, why, needed.get(cid, [])))
    for cid in sorted(live - inv.keys()):
        res.problems.append(Problem("missing", cid, "not in the store", needed.get(cid, [])))
    res.problems.extend(_pointer_sizes(reach, headers))
    res.problems.extend(_long_chains(headers, store.max_chain))
    if full:
        bad = {c for c in (set(corrupt) | set(unreadable) | (live - inv.keys()))}
        res.problems.extend(_rebuild_files(repo, reach, bad, progress))
    return res


def _rebuild_files(repo: Repo, reach: reachability.Reachable, bad: set[str], progress: Progress | None) -> list[Problem]:
    """Rebuild each reachable file once (bytes thrown away) and compare with its pointer's file id."""
    from ..filter.smudge import smudge

    out = []
    done: set[tuple[str, str]] = set()
    todo = [(b, p) for b, p in reach.pointers.items() if not (p.chunk_ids() & bad)]
    for i, (blob, p) in enumerate(todo):
        if progress is not None:
            progress("rebuilding files", i, len(todo))
        if (p.file_id, p.render()) in done:
            continue
        done.add((p.file_id, p.render()))
        uses = [(r, path, "file") for r, path in reach.uses.get(blob, [])]
        try:
            smudge(p, repo.store, lambda _b: None, path=uses[0][1] if uses else blob, workers=repo.workers)
        except (CorruptObjectError, StoreError) as exc:
            out.append(Problem("bad-file", blob, f"the rebuilt file does not match its pointer ({exc})", uses))
    return out


def _set_aside(store, src, inv, corrupt, bad_entries, lost: Path) -> dict[str, str]:
    """Move corrupt loose objects and damaged packs (after salvaging their sound objects) aside."""
    moved: dict[str, str] = {}
    for cid in corrupt:
        if inv[cid].loose is not None:
            moved[cid] = _move(store.loose.path(cid), lost, cid)
    damaged = set(bad_entries)
    for cid in corrupt:
        if inv[cid].loose is None and inv[cid].packed:
            damaged.add(inv[cid].packed[0][0].path)
    for path in damaged:
        pack = next((p for p in src.packs if p.path == path), None)
        if pack is None:
            continue
        skip = {c for c, _ in bad_entries.get(path, [])} | set(corrupt)
        _salvage(pack, skip, src.root)
        where = _move(path, lost, path.name)
        for c in skip:
            if c in inv and any(p.path == path for p, _ in inv[c].packed or []):
                moved.setdefault(c, where)
    src.rescan(force=True)
    return moved


def _detail(exc: CorruptObjectError) -> str:
    msg = str(exc)
    return msg.split(" is corrupt: ", 1)[-1].split("; run 'git coral fsck'", 1)[0]


def _headers(store, inv: dict[str, packs.Stored]) -> tuple[dict[str, ObjectHeader], dict[str, str]]:
    headers: dict[str, ObjectHeader] = {}
    corrupt: dict[str, str] = {}
    for cid in inv:
        try:
            hdr = packs.read_header(store, cid)
        except CorruptObjectError as exc:
            corrupt[cid] = _detail(exc)
            continue
        if hdr is not None:
            headers[cid] = hdr
    return headers, corrupt


def _pack_failures(bad: dict[Path, list[tuple[str, str]]], inv: dict[str, packs.Stored]) -> dict[str, str]:
    """Bad pack copies that are the copy reads return (shadowed bad copies are only moved aside)."""
    out: dict[str, str] = {}
    for path, items in bad.items():
        for cid, why in items:
            s = inv[cid]
            if s.loose is None and s.packed and s.packed[0][0].path == path:
                out[cid] = why
    return out


def _decode_all(store, inv, headers, corrupt, progress) -> dict[str, str]:
    """Decode every object once, bases before deltas; return those that do not decode to their id."""
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for cid, hdr in headers.items():
        if cid in corrupt:
            continue
        if hdr.base is None:
            roots.append(cid)
        else:
            children.setdefault(hdr.base, []).append(cid)
    bad: dict[str, str] = {}
    done = 0
    codecs: dict = {}
    stack: list[tuple[str, np.ndarray | None, int]] = [(c, None, 0) for c in roots]
    while stack:
        cid, base, depth = stack.pop()
        done += 1
        if progress and done % 256 == 0:
            progress("checking objects", done, len(inv))
        if depth > HARD_CHAIN:
            bad[cid] = f"delta chain longer than {HARD_CHAIN}"
            continue
        try:
            data = store.read_object_local(cid)
            if data is None:
                continue
            raw = _decode(cid, headers[cid], data, base, codecs, store.level)
        except CorruptObjectError as exc:
            bad[cid] = _detail(exc)
            continue
        for child in children.get(cid, ()):
            if child not in corrupt:
                stack.append((child, raw, depth + 1))
    if progress:
        progress("checking objects", len(inv), len(inv))
    return bad


def _decode(cid: str, hdr: ObjectHeader, data: bytes, base: np.ndarray | None, codecs: dict, level: int) -> np.ndarray:
    try:
        c = codecs.get(hdr.codec) or codecs.setdefault(hdr.codec, codec(hdr.codec, level))
    except KeyError:
        raise CorruptObjectError(cid, f"unknown codec {hdr.codec}") from None
    if c.delta and (base is None or base.size != hdr.raw_len):
        raise CorruptObjectError(cid, "its delta base has the wrong length")
    try:
        raw = c.decode(memoryview(data)[HEADER_SIZE:], hdr.itemsize, hdr.raw_len, base if c.delta else None)
    except (ValueError, RuntimeError, TypeError, AssertionError) as exc:
        raise CorruptObjectError(cid, f"payload does not decode ({exc})") from None
    if chunk_id(raw) != cid:
        raise CorruptObjectError(cid, "content does not match its id")
    return raw


def _dependents(headers: dict[str, ObjectHeader], corrupt: dict[str, str], inv) -> dict[str, str]:
    """Objects that are sound themselves but cannot be read: a base is corrupt, missing or cyclic."""
    out: dict[str, str] = {}
    for cid, hdr in headers.items():
        if cid in corrupt or hdr.base is None:
            continue
        seen = {cid}
        cur: str | None = hdr.base
        why = None
        while cur is not None:
            if cur in corrupt:
                why = f"its delta base {cur} is corrupt"
            elif cur not in inv:
                why = f"its delta base {cur} is missing"
            elif cur in seen:
                why = "its delta chain is cyclic"
            elif len(seen) > HARD_CHAIN:
                why = f"its delta chain is longer than {HARD_CHAIN}"
            if why:
                break
            seen.add(cur)
            nxt = headers.get(cur)
            cur = nxt.base if nxt else None
        if why:
            out[cid] = why
    return out


def _pointer_sizes(reach: reachability.Reachable, headers: dict[str, ObjectHeader]) -> list[Problem]:
    """Pointers whose chunks do not add up to the sizes the pointer states."""
    out = []
    for blob, p in reach.pointers.items():
        parts = [("skeleton", p.skeleton, p.skeleton_nbytes)]
        parts += [(f"tensor {t.name}", t.chunks, t.nbytes) for t in p.tensors]
        for part, ids, nbytes in parts:
            if not all(c in headers for c in ids):
                continue  # reported as missing or corrupt already
            got = sum(headers[c].raw_len for c in ids)
            if got != nbytes:
                uses = [(r, path, part) for r, path in reach.uses.get(blob, [])]
                out.append(Problem("pointer-size", blob, f"{part}: chunks hold {got} bytes, the pointer says {nbytes}", uses))
    return out


def chain_depths(headers: dict[str, ObjectHeader]) -> dict[str, int]:
    """Delta hops from each object to its keyframe (cycles and missing bases stop the count)."""
    depth: dict[str, int] = {}
    for cid in headers:
        path: list[str] = []
        cur: str | None = cid
        while cur is not None and cur not in depth and len(path) <= HARD_CHAIN and cur not in path:
            path.append(cur)
            h = headers.get(cur)
            cur = h.base if h else None
        below = depth.get(cur, -1) if cur is not None else -1
        for k, c in enumerate(reversed(path)):
            depth[c] = below + 1 + k
    return depth


def _long_chains(headers: dict[str, ObjectHeader], max_chain: int) -> list[Problem]:
    depth = chain_depths(headers)
    if not depth:
        return []
    worst = max(depth, key=lambda c: depth[c])
    if depth[worst] <= max_chain:
        return []
    n = sum(1 for v in depth.values() if v > max_chain)
    return [Problem("long-chain", worst, f"{n} object(s) sit deeper than coral.maxChain={max_chain} "
                    f"(deepest {depth[worst]}); 'git coral repack' re-bases them", warning=True)]


def _salvage(pack: packs.Pack, skip: set[str], root: Path) -> None:
    """Copy the sound objects of a damaged pack into a new pack."""
    items = []
    for e in pack.iter_entries():
        if e.cid in skip:
            continue
        try:
            pack.read_entry(e)
        except CorruptObjectError:
            continue
        items.append(packs.PackItem(e.cid, e.mtime, (lambda e=e: pack.read_entry(e))))
    packs.write_pack(root, items)


def _move(path: Path, lost: Path, name: str) -> str:
    """Move ``path`` into lost-found under ``name`` (never overwriting); return where it went."""
    lost.mkdir(parents=True, exist_ok=True)
    dest = lost / name
    if dest.exists():
        dest = lost / f"{name}.{secrets.token_hex(4)}"
    try:
        os.replace(path, dest)
    except OSError as exc:
        raise StoreError(f"cannot move {path} to {dest}: {exc}") from None
    return str(dest)
