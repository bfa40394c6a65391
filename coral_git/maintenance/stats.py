"""``git coral stats``: what the history holds, what the store costs, and where the savings come from.

Definitions (docs/store.md has the long form):

- logical bytes: every version of every tracked file in history, each ``(path, version)`` once;
- git-lfs bytes: every unique file content once (what git-lfs would store, uncompressed);
- unique chunk bytes: the raw bytes of every distinct chunk reachable pointers name;
- stored bytes: the encoded objects those chunks need (their delta bases included); on-disk bytes
  are the whole store (loose files plus packs, garbage included);
- savings split, so that the figures add up exactly:
  ``logical - dedup - delta - compression + base overhead + missing = stored``, where dedup = logical -
  unique chunk bytes (sizes come from the pointers, so they hold even when chunks are missing); base
  overhead = stored bytes of objects kept only as delta bases of history's chunks; missing = raw bytes of
  chunks the store lacks. What the present chunks save is split between plain compression and delta
  encoding by pricing each delta object at the compression rate the keyframes achieve (an estimate: a
  delta object's keyframe size is not stored anywhere). Compression is negative when chunks do not
  compress (each object costs its header).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ..core.chunking import byte_chunks, tensor_chunks
from ..git import reachability
from ..git.repo import Repo
from ..store import packs
from ..store.objects import ObjectHeader
from .fsck import chain_depths

Progress = Callable[[str, int, int], None]


@dataclass
class Row:
    """One line of a ``--by file`` or ``--by commit`` breakdown."""

    name: str
    versions: int = 0  # file versions introduced (by file: distinct versions; by commit: new versions)
    logical_bytes: int = 0
    new_chunks: int = 0
    new_chunk_bytes: int = 0  # raw bytes of chunks first needed here
    stored_bytes: int = 0  # encoded bytes of those chunks
    subject: str = ""


@dataclass
class Stats:
    """Store and history figures; ``rows`` holds the breakdown when one was asked for."""

    commits: int = 0
    files: int = 0  # distinct tracked paths
    file_versions: int = 0  # distinct (path, version) pairs
    logical_bytes: int = 0
    lfs_bytes: int = 0
    unique_files: int = 0
    chunks: int = 0
    unique_chunk_bytes: int = 0
    stored_bytes: int = 0  # encoded bytes of what history needs (chunks + delta bases)
    disk_bytes: int = 0  # bytes of every object file and pack on disk
    disk_files: int = 0
    objects: int = 0
    loose_objects: int = 0
    packs: int = 0
    keyframes: int = 0
    deltas: int = 0
    unreachable_objects: int = 0
    missing_chunks: int = 0
    missing_bytes: int = 0  # raw bytes of the chunks the store lacks
    base_overhead: int = 0  # stored bytes of objects kept only as delta bases
    longest_chain: int = 0
    dedup_saved: int = 0
    compression_saved: int = 0
    delta_saved: int = 0
    rows: list[Row] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """logical / stored; 0 when unknown (chunks missing, or nothing stored)."""
        return self.logical_bytes / self.stored_bytes if self.stored_bytes and not self.missing_chunks else 0.0

    @property
    def lfs_ratio(self) -> float:
        return self.lfs_bytes / self.stored_bytes if self.stored_bytes and not self.missing_chunks else 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["ratio"] = round(self.ratio, 4)
        d["lfs_ratio"] = round(self.lfs_ratio, 4)
        return d


def stats(repo: Repo, *, by: str | None = None, progress: Progress | None = None) -> Stats:
    """Compute the figures for ``repo``; ``by`` is None, ``"file"`` or ``"commit"``."""
    reach, files, walker = reachability.walk(repo.common_dir, progress)
    store = repo.store
    src = packs.attach(store)
    inv = packs.inventory(store, src)
    headers: dict[str, ObjectHeader] = {}
    for cid in inv:
        try:
            h = packs.read_header(store, cid)
        except Exception:  # a damaged object: fsck reports it; stats counts what it can read
            continue
        if h is not None:
            headers[cid] = h
    s = Stats(commits=len(reach.commits), objects=len(inv))
    s.loose_objects = sum(1 for v in inv.values() if v.loose is not None)
    s.packs = len(src.packs)
    s.disk_files, s.disk_bytes = packs.store_files(store, src)

    # history: (path, version) pairs in history order (commits oldest first, then the indexes)
    order = [*reach.commits, *(k for k in files if not _is_object_id(k))]
    pairs: dict[tuple[str, str], str] = {}  # (path, blob) → where it first appeared
    for key in order:
        for path, blob in files.get(key, ()):
            if blob in reach.pointers:
                pairs.setdefault((path, blob), key)
    s.file_versions = len(pairs)
    s.files = len({p for p, _ in pairs})
    s.logical_bytes = sum(reach.pointers[b].size for _, b in pairs)
    unique = {reach.pointers[b].file_id: reach.pointers[b].size for _, b in pairs}
    s.unique_files, s.lfs_bytes = len(unique), sum(unique.values())

    live = reach.chunk_ids()
    sizes = _chunk_sizes(reach.pointers.values())
    s.chunks = len(live)
    missing = live - inv.keys()
    s.missing_chunks = len(missing)
    raw = {c: headers[c].raw_len if c in headers else sizes.get(c, 0) for c in live}
    s.unique_chunk_bytes = sum(raw.values())
    s.missing_bytes = sum(raw[c] for c in missing)
    needed = set(c for c in live if c in inv)
    stack = list(needed)
    while stack:
        h = headers.get(stack.pop())
        if h is not None and h.base is not None and h.base not in needed and h.base in inv:
            needed.add(h.base)
            stack.append(h.base)
    s.unreachable_objects = len(inv) - len(needed)
    s.stored_bytes = sum(inv[c].size for c in needed)
    kf = [c for c in needed if c in headers and headers[c].base is None]
    dl = [c for c in needed if c in headers and headers[c].base is not None]
    s.keyframes, s.deltas = len(kf), len(dl)
    present = [c for c in live if c in inv]
    live_stored = sum(inv[c].size for c in present)
    s.base_overhead = s.stored_bytes - live_stored
    kf_live = [c for c in present if c in headers and headers[c].base is None]
    kf_raw = sum(raw[c] for c in kf_live)
    rate = min(1.0, sum(inv[c].size for c in kf_live) / kf_raw) if kf_raw else 1.0
    dl_raw = sum(raw[c] for c in present if c in headers and headers[c].base is not None)
    dl_stored = sum(inv[c].size for c in present if c in headers and headers[c].base is not None)
    s.dedup_saved = s.logical_bytes - s.unique_chunk_bytes
    s.delta_saved = round(dl_raw * rate - dl_stored)
    s.compression_saved = sum(raw[c] for c in present) - live_stored - s.delta_saved
    depths = chain_depths(headers)
    s.longest_chain = max((depths.get(c, 0) for c in needed), default=0)

    if by in ("file", "commit"):
        s.rows = _rows(by, order, files, reach, pairs, headers, inv, walker)
    return s


def _chunk_sizes(pointers) -> dict[str, int]:
    """Raw size of every chunk the pointers name, from the chunk grid (no store access)."""
    out: dict[str, int] = {}
    for p in pointers:
        pieces = [(p.skeleton, byte_chunks(p.skeleton_nbytes, p.chunk_bytes))]
        pieces += [(t.chunks, tensor_chunks(t.dtype, t.shape, t.nbytes, p.chunk_bytes)) for t in p.tensors]
        for ids, ranges in pieces:
            if len(ids) == len(ranges):
                out.update((c, e - b) for c, (b, e) in zip(ids, ranges, strict=True))
    return out


def _is_object_id(key: str) -> bool:
    return len(key) == 40 and all(ch in "0123456789abcdef" for ch in key)


def _rows(by, order, files, reach, pairs, headers, inv, walker) -> list[Row]:
    """Attribute each (path, version) and each chunk to where history first needs it."""
    rows: dict[str, Row] = {}
    seen_chunks: set[str] = set()
    versions: dict[str, set[str]] = {}
    for key in order:
        for path, blob in files.get(key, ()):
            p = reach.pointers.get(blob)
            if p is None or pairs.get((path, blob)) != key:
                continue
            name = path if by == "file" else key
            row = rows.get(name)
            if row is None:
                row = rows[name] = Row(name, subject=_subject(walker, key) if by == "commit" else "")
            versions.setdefault(name, set()).add(blob)
            row.logical_bytes += p.size
            for c in sorted(p.chunk_ids()):
                if c in seen_chunks:
                    continue
                seen_chunks.add(c)
                row.new_chunks += 1
                if c in headers:
                    row.new_chunk_bytes += headers[c].raw_len
                    row.stored_bytes += inv[c].size
    for name, row in rows.items():
        row.versions = len(versions.get(name, ()))
    return list(rows.values())


def _subject(walker: reachability.Walker, key: str) -> str:
    try:
        return walker.repo[key].message.split("\n", 1)[0][:60]
    except Exception:
        return key  # an index: its label is the name
