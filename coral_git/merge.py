"""Three-way merge of model files, tensor by tensor.

:func:`plan_merge` compares three pointers (base, ours, theirs) and decides every tensor without
reading tensor data: one-sided changes, identical changes, additions and deletions merge by
themselves; tensors changed differently on both sides go to the strategy in force
(:mod:`coral_git.merge_strategies`) or become conflicts. The non-tensor part of the file
(safetensors ``__metadata__``, a torch checkpoint's pickle) is merged by the container's
:class:`Container` handler. :func:`write_merged` then writes the merged file, a real file of the
same format, streaming tensors chunk by chunk; :func:`merged_pointer` cleans it into the store.
"""

from __future__ import annotations

import fnmatch
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar

import numpy as np
import xxhash

from . import pointer as ptr
from .clean import clean
from .errors import CoralError
from .formats.layout import itemsize
from .mapped import MappedFile
from .merge_strategies import Strategy, compute_dtype, from_float, is_float, parse_spec, to_float
from .pointer import Pointer, TensorEntry
from .repo import Repo
from .smudge import decoded_chunks
from .store.chunkstore import ChunkStore
from .store.recent import RecentTensors

FILE = ""  # the name a whole-file conflict goes by
METADATA = "__metadata__"


class MergeError(CoralError):
    """A merge cannot be computed or written (not a conflict: something is broken)."""


# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


@dataclass
class MergeSettings:
    """Which strategy decides each conflicting tensor.

    ``rules`` are ``(glob, spec)`` pairs tried in order (first match wins) before the file's
    ``strategy``; ``params`` hold the defaults ``alpha``, ``lambda`` and ``density``.
    """

    strategy: str = "conflict"
    rules: tuple[tuple[str, str], ...] = ()
    params: dict[str, float] = field(default_factory=dict)
    _cache: dict[str, Strategy] = field(default_factory=dict, repr=False, compare=False)

    def strategy_for(self, name: str) -> Strategy:
        for glob, spec in self.rules:
            if fnmatch.fnmatchcase(name, glob):
                return self._parse(spec)
        return self._parse(self.strategy)

    def strategy_for_spec(self, spec: str) -> Strategy:
        return self._parse(spec)

    def _parse(self, spec: str) -> Strategy:
        s = self._cache.get(spec)
        if s is None:
            s = self._cache[spec] = parse_spec(spec, self.params)
        return s

    def check(self) -> None:
        """Raise UsageError now for any unknown strategy or bad parameter."""
        self._parse(self.strategy)
        for _, spec in self.rules:
            self._parse(spec)

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "rules": [list(r) for r in self.rules], "params": self.params}

    @classmethod
    def from_json(cls, d: dict) -> MergeSettings:
        return cls(str(d.get("strategy", "conflict")), tuple((str(g), str(s)) for g, s in d.get("rules", [])), dict(d.get("params", {})))


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """Something both sides changed that the strategy in force does not decide."""

    name: str  # tensor name, METADATA, or FILE for the whole file
    reason: str


@dataclass(frozen=True)
class Decision:
    """What the merged file holds for one tensor: a stored entry, or a combination of the three."""

    name: str
    take: TensorEntry | None  # the chosen entry (None for a deletion or a combination)
    source: str  # "ours" | "theirs" | "both" | "deleted" | strategy name
    strategy: Strategy | None = None
    base: TensorEntry | None = None
    ours: TensorEntry | None = None
    theirs: TensorEntry | None = None

    @property
    def present(self) -> bool:
        return self.take is not None or self.strategy is not None

    @property
    def dtype(self) -> str:
        e = self.take or self.ours
        assert e is not None
        return e.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        e = self.take or self.ours
        assert e is not None
        return e.shape


@dataclass
class MergePlan:
    """Every decision of a three-way merge of one file, before any tensor data is read."""

    path: str
    base: Pointer | None
    ours: Pointer
    theirs: Pointer
    whole: str | None = None  # "ours" | "theirs" when the result is one side's file as is
    decisions: list[Decision] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    extra: object = None  # the container's merged non-tensor part
    container: Container | None = None

    @property
    def clean(self) -> bool:
        return not self.conflicts

    def counts(self) -> dict[str, int]:
        """How many tensors came from where: ``{"ours": n, "theirs": m, "average": k, …}``."""
        out: dict[str, int] = {}
        for d in self.decisions:
            out[d.source] = out.get(d.source, 0) + 1
        return out


def _content_id(store: ChunkStore, e: TensorEntry, context: str) -> str:
    h = xxhash.xxh3_128()
    for c in e.chunks:
        h.update(store.get(c, context))
    return h.hexdigest()


class _Same:
    """Tensor equality: by chunk ids, or by content when the pointers used different chunk sizes."""

    def __init__(self, store: ChunkStore, path: str, *pointers: Pointer | None) -> None:
        self.store = store
        self.path = path
        self.mixed = len({p.chunk_bytes for p in pointers if p is not None}) > 1
        self._ids: dict[tuple[str, ...], str] = {}

    def __call__(self, a: TensorEntry | None, b: TensorEntry | None) -> bool:
        if a is None or b is None:
            return a is b
        if (a.dtype, a.shape, a.nbytes) != (b.dtype, b.shape, b.nbytes):
            return False
        if a.chunks == b.chunks:
            return True
        return self.mixed and self._id(a) == self._id(b)

    def _id(self, e: TensorEntry) -> str:
        v = self._ids.get(e.chunks)
        if v is None:
            v = self._ids[e.chunks] = _content_id(self.store, e, f"{self.path}: tensor {e.name}")
        return v


def _describe(e: TensorEntry) -> str:
    return f"{e.dtype}[{','.join(map(str, e.shape))}]"


def _kinds(o: TensorEntry, t: TensorEntry) -> str:
    """What differs between the two sides beyond their values, e.g. ``: dtype F16 vs BF16``."""
    out = []
    if o.dtype != t.dtype:
        out.append(f"dtype {o.dtype} (ours) vs {t.dtype} (theirs)")
    if o.shape != t.shape:
        out.append(f"shape {_describe(o)} (ours) vs {_describe(t)} (theirs)")
    return ": " + ", ".join(out) if out else ""


def _applicable(b: TensorEntry | None, o: TensorEntry, t: TensorEntry) -> str:
    """Which strategies can decide this tensor, as a hint for ``git coral resolve``."""
    if (o.dtype, o.shape) != (t.dtype, t.shape) or not is_float(o.dtype):
        return "only --ours or --theirs apply"
    if b is None or (b.dtype, b.shape) != (o.dtype, o.shape):
        return "--ours, --theirs, --strategy average or weighted:α apply (no usable base for task-arithmetic/ties)"
    return "--ours, --theirs or --strategy average, weighted:α, task-arithmetic:λ, ties:density apply"


def decide(name: str, b: TensorEntry | None, o: TensorEntry | None, t: TensorEntry | None, same: _Same, strategy: Strategy) -> Decision | Conflict:
    """The three-way decision for one tensor (``strategy`` only matters when both sides changed it)."""
    if same(o, t):
        return Decision(name, o, "both" if o is not None else "deleted")
    if same(b, o):
        return Decision(name, t, "theirs" if t is not None else "deleted")
    if same(b, t):
        return Decision(name, o, "ours" if o is not None else "deleted")
    if o is None or t is None:
        side = "ours" if o is None else "theirs"
        if strategy.pick:
            picked = o if strategy.pick == "ours" else t
            return Decision(name, picked, strategy.pick if picked is not None else "deleted")
        return Conflict(name, f"deleted in {side}, modified in {'theirs' if o is None else 'ours'}")
    if strategy.pick:
        return Decision(name, o if strategy.pick == "ours" else t, strategy.pick)
    added = "added on both sides with different values" if b is None else "changed on both sides"
    if not strategy.numeric:
        return Conflict(name, f"{added}{_kinds(o, t)} (strategy: {strategy.spec}); {_applicable(b, o, t)}")
    if (o.dtype, o.shape) != (t.dtype, t.shape):
        return Conflict(name, f"{added}{_kinds(o, t)}: {strategy.name} cannot combine them; {_applicable(b, o, t)}")
    if not is_float(o.dtype):
        return Conflict(name, f"{added}: {o.dtype} tensors are never combined numerically; {_applicable(b, o, t)}")
    if strategy.needs_base and (b is None or (b.dtype, b.shape) != (o.dtype, o.shape)):
        why = "there is no common base" if b is None else f"the base is {_describe(b)}"
        return Conflict(name, f"{added}: {strategy.name} needs the base tensor but {why}")
    return Decision(name, None, strategy.name, strategy, b, o, t)


def plan_merge(
    path: str,
    base: Pointer | None,
    ours: Pointer,
    theirs: Pointer,
    store: ChunkStore,
    settings: MergeSettings,
    resolutions: tuple[tuple[str, str], ...] = (),
) -> MergePlan:
    """Decide every tensor of a three-way merge (reads only skeletons, never tensor data).

    ``resolutions`` are ``(glob, spec)`` choices made by ``git coral resolve``, in the order they
    were made. They apply only to what ``settings`` leaves conflicting: the first choice whose
    glob matches and that decides the conflict wins.
    """
    plan = MergePlan(path, base, ours, theirs)
    parser = MergeSettings(params=settings.params)

    def matching(name: str) -> list[Strategy]:
        return [parser.strategy_for_spec(spec) for glob, spec in resolutions if fnmatch.fnmatchcase(name, glob)]

    # whole-file fast paths: one side unchanged, or both the same
    if ours.file_id == theirs.file_id or (base is not None and base.file_id == theirs.file_id):
        plan.whole = "ours"
        return plan
    if base is not None and base.file_id == ours.file_id:
        plan.whole = "theirs"
        return plan
    container = container_for(ours.format)
    if container is None or theirs.format != ours.format:
        why = f"{ours.format} files are merged as a whole"
        if theirs.format != ours.format:
            why = f"the file is {ours.format} in ours and {theirs.format} in theirs"
        picks = [s.pick for s in [settings.strategy_for(FILE), *matching(FILE)] if s.pick]
        if picks:
            plan.whole = picks[0]
        else:
            plan.conflicts.append(Conflict(FILE, why))
        return plan
    if base is not None and base.format != ours.format:
        base = None  # a base of another format says nothing about tensors: merge as add/add
    plan.container = container
    sides = container.load(store, path, base, ours, theirs)
    extra, extra_conflicts = container.merge_extra(sides, settings)
    names = {c.name for c in extra_conflicts}
    for glob, spec in resolutions if extra_conflicts else ():
        if all(fnmatch.fnmatchcase(n, glob) for n in names):
            extra2, left = container.merge_extra(sides, MergeSettings(spec, params=settings.params))
            if not left:
                extra, extra_conflicts = extra2, left
                break
    plan.extra = extra
    plan.conflicts.extend(extra_conflicts)
    same = _Same(store, path, base, ours, theirs)
    b_items = container.items(base) if base is not None else {}
    o_items, t_items = container.items(ours), container.items(theirs)
    names_in_order = list(o_items) + [n for n in t_items if n not in o_items]
    names_in_order += [n for n in b_items if n not in o_items and n not in t_items]
    for name in names_in_order:
        b, o, t = b_items.get(name), o_items.get(name), t_items.get(name)
        d = decide(name, b, o, t, same, settings.strategy_for(name))
        if isinstance(d, Conflict):
            for alt in matching(name):
                d2 = decide(name, b, o, t, same, alt)
                d = d2  # a resolution that fails says why it failed, not why the first try did
                if not isinstance(d2, Conflict):
                    break
        if isinstance(d, Conflict):
            plan.conflicts.append(d)
        elif d.present:
            plan.decisions.append(d)
    if plan.clean:
        container.check(plan, sides, settings, resolutions)
    return plan


# ---------------------------------------------------------------------------------------------
# reading tensor data
# ---------------------------------------------------------------------------------------------


DECODE_WORKERS = 2  # chunks decoded ahead on a small pool (2 × workers in flight per tensor)


def _decoded(store: ChunkStore, e: TensorEntry, context: str) -> Iterator[np.ndarray]:
    return decoded_chunks(store, [(c, f"tensor {e.name}") for c in e.chunks], context, DECODE_WORKERS)


class TensorReader:
    """Sequential reads of one stored tensor's bytes, decoding a few chunks ahead."""

    def __init__(self, store: ChunkStore, entry: TensorEntry, context: str) -> None:
        self._chunks = _decoded(store, entry, context)
        self._context = context
        self._buf = np.empty(0, dtype=np.uint8)

    def read(self, n: int) -> np.ndarray:
        parts: list[np.ndarray] = []
        while n:
            if self._buf.size == 0:
                chunk = next(self._chunks, None)
                if chunk is None:
                    raise MergeError(f"{self._context}: tensor data ends early")
                self._buf = chunk
            take = min(n, self._buf.size)
            parts.append(self._buf[:take])
            self._buf = self._buf[take:]
            n -= take
        if not parts:
            return np.empty(0, dtype=np.uint8)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def entry_pieces(store: ChunkStore, e: TensorEntry, context: str) -> Iterator[np.ndarray]:
    """The raw bytes of a stored tensor, chunk by chunk."""
    return _decoded(store, e, context)


def combined_pieces(store: ChunkStore, d: Decision, context: str, block_bytes: int) -> Iterator[np.ndarray]:
    """The raw bytes of a combined tensor, computed block by block in float32/float64."""
    assert d.strategy is not None and d.ours is not None and d.theirs is not None
    dtype, nbytes = d.ours.dtype, d.ours.nbytes
    size = itemsize(dtype)
    block = max(size, block_bytes // size * size)

    def blocks() -> Iterator[tuple[np.ndarray | None, np.ndarray, np.ndarray]]:
        use_base = d.base is not None and d.strategy is not None and d.strategy.needs_base
        rb = TensorReader(store, d.base, context) if use_base and d.base is not None else None
        ro, rt = TensorReader(store, d.ours, context), TensorReader(store, d.theirs, context)  # type: ignore[arg-type]
        for start in range(0, nbytes, block):
            n = min(block, nbytes - start)
            b = to_float(rb.read(n), dtype) if rb is not None else None
            yield b, to_float(ro.read(n), dtype), to_float(rt.read(n), dtype)

    d.strategy.prepare(blocks, nbytes // size)
    cdt = compute_dtype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        for b, o, t in blocks():
            out = d.strategy.combine(b, o, t).astype(cdt, copy=False)
            yield from_float(out, dtype)


def pieces(store: ChunkStore, d: Decision, context: str, block_bytes: int) -> Iterator[np.ndarray]:
    """The merged bytes of one tensor."""
    if d.take is not None:
        return entry_pieces(store, d.take, context)
    return combined_pieces(store, d, context, block_bytes)


def read_skeleton(store: ChunkStore, p: Pointer, context: str) -> bytes:
    """The skeleton bytes of a pointer's file (every byte outside tensor spans)."""
    return b"".join(store.get(c, f"{context}: skeleton").tobytes() for c in p.skeleton)


# ---------------------------------------------------------------------------------------------
# containers
# ---------------------------------------------------------------------------------------------


class Container:
    """Format-specific merge: which items are tensors, the non-tensor part, and the writer."""

    format: ClassVar[str]

    def load(self, store: ChunkStore, path: str, base: Pointer | None, ours: Pointer, theirs: Pointer) -> object:
        """Read what the container needs from the three skeletons."""
        raise NotImplementedError

    def items(self, p: Pointer) -> dict[str, TensorEntry]:
        return p.by_name()

    def merge_extra(self, sides: object, settings: MergeSettings) -> tuple[object, list[Conflict]]:
        """Merge the non-tensor part; return it and its conflicts."""
        raise NotImplementedError

    def check(self, plan: MergePlan, sides: object, settings: MergeSettings, resolutions: tuple[tuple[str, str], ...]) -> None:
        """Turn decisions the writer cannot honour into conflicts (appended to ``plan.conflicts``)."""

    def write(self, plan: MergePlan, store: ChunkStore, out: BinaryIO, block_bytes: int) -> None:
        raise NotImplementedError


CONTAINERS: dict[str, Container] = {}


def register_container(c: Container) -> Container:
    CONTAINERS[c.format] = c
    return c


def container_for(fmt: str) -> Container | None:
    """The merge handler of a pointer format (torch zip's is loaded on first use)."""
    if fmt not in CONTAINERS and fmt == "torch-zip":
        from . import merge_torch  # noqa: F401  (registers itself)
    return CONTAINERS.get(fmt)


def merge_dicts(b: dict | None, o: dict | None, t: dict | None) -> tuple[dict | None, list[str]]:
    """Three-way merge of flat dicts key by key; returns the result and the conflicting keys.

    A key set differently on both sides conflicts and keeps our value in the result.
    """
    if o == t:
        return o, []
    if b == o:
        return t, []
    if b == t:
        return o, []
    b, o2, t2 = b or {}, o or {}, t or {}
    out: dict = {}
    bad: list[str] = []
    missing = object()
    for k in list(o2) + [k for k in t2 if k not in o2]:
        bv, ov, tv = b.get(k, missing), o2.get(k, missing), t2.get(k, missing)
        if ov == tv or bv == tv:
            v = ov
        elif bv == ov:
            v = tv
        else:
            bad.append(k)
            v = ov
        if v is not missing:
            out[k] = v
    return out, bad


@dataclass
class _StSide:
    header: dict
    raw_header: bytes


class SafetensorsContainer(Container):
    """safetensors: tensors by header key; ``__metadata__`` merged key by key."""

    format = "safetensors"

    def load(self, store: ChunkStore, path: str, base: Pointer | None, ours: Pointer, theirs: Pointer) -> dict[str, _StSide | None]:
        return {"base": self._side(store, path, base), "ours": self._side(store, path, ours), "theirs": self._side(store, path, theirs)}

    def _side(self, store: ChunkStore, path: str, p: Pointer | None) -> _StSide | None:
        if p is None:
            return None
        skel = read_skeleton(store, p, path)
        (n,) = struct.unpack_from("<Q", skel, 0)
        raw = skel[8 : 8 + n]
        return _StSide(json.loads(raw.decode("utf-8")), raw)

    def merge_extra(self, sides: object, settings: MergeSettings) -> tuple[object, list[Conflict]]:
        assert isinstance(sides, dict)
        metas = [s.header.get(METADATA) if s is not None else None for s in (sides["base"], sides["ours"], sides["theirs"])]
        merged, bad = merge_dicts(*metas)
        if not bad:
            return merged, []
        pick = settings.strategy_for(METADATA).pick
        if pick:
            o, t = metas[1] or {}, metas[2] or {}
            src = o if pick == "ours" else t
            merged = dict(merged or {})
            for k in bad:
                if k in src:
                    merged[k] = src[k]
                else:
                    merged.pop(k, None)
            return merged, []
        o, t = metas[1] or {}, metas[2] or {}
        keys = ", ".join(f"{k!r} (ours {o.get(k)!r}, theirs {t.get(k)!r})" for k in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        return merged, [Conflict(METADATA, f"metadata changed differently on both sides: {keys}{more}")]

    def write(self, plan: MergePlan, store: ChunkStore, out: BinaryIO, block_bytes: int) -> None:
        ours = plan.ours
        meta = plan.extra
        by_name = {d.name: d for d in plan.decisions}
        o_entries = ours.tensors
        same_layout = [(t.name, t.dtype, t.shape) for t in o_entries] == [(d.name, d.dtype, d.shape) for d in plan.decisions]
        skel = read_skeleton(store, ours, plan.path)
        (n,) = struct.unpack_from("<Q", skel, 0)
        o_header = json.loads(skel[8 : 8 + n].decode("utf-8"))
        if same_layout and meta == o_header.get(METADATA):
            _splice(skel, ours, [by_name[t.name] for t in o_entries], store, out, plan.path, block_bytes)
            return
        # rebuild the header: ours' key order, then new tensors; data in ours' file order, then new ones
        header: dict = {}
        order = [d.name for d in plan.decisions]
        offset = 0
        spans: dict[str, list[int]] = {}
        for name in order:
            d = by_name[name]
            nb = (d.take.nbytes if d.take is not None else d.ours.nbytes)  # type: ignore[union-attr]
            spans[name] = [offset, offset + nb]
            offset += nb
        keys = [k for k in o_header if k == METADATA or k in by_name] + [k for k in order if k not in o_header]
        if meta and METADATA not in keys:
            keys.insert(0, METADATA)
        for k in keys:
            if k == METADATA:
                if meta:
                    header[k] = meta
                continue
            d = by_name[k]
            header[k] = {"dtype": d.dtype, "shape": list(d.shape), "data_offsets": spans[k]}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text += b" " * (-(8 + len(text)) % 8)
        out.write(struct.pack("<Q", len(text)))
        out.write(text)
        for name in order:
            for piece in pieces(store, by_name[name], plan.path, block_bytes):
                out.write(memoryview(piece))


register_container(SafetensorsContainer())


def _splice(
    skel: bytes,
    layout: Pointer,
    decisions: list[Decision],
    store: ChunkStore,
    out: BinaryIO,
    path: str,
    block_bytes: int,
    crc: bool = False,
) -> list[int]:
    """Write ``layout``'s skeleton with each tensor's bytes replaced by its decision's bytes.

    Every decision must have the entry's byte size. With ``crc``, returns the CRC-32 of each
    tensor's new bytes (computed while writing), in ``layout`` order.
    """
    import zlib

    pos = 0  # file position
    spos = 0  # skeleton position
    sums: list[int] = []
    for e, d in zip(layout.tensors, decisions, strict=True):
        gap = e.offset - pos
        out.write(skel[spos : spos + gap])
        spos += gap
        value = 0
        got = 0
        for piece in pieces(store, d, path, block_bytes):
            mv = memoryview(piece)
            out.write(mv)
            if crc:
                value = zlib.crc32(mv, value)
            got += piece.size
        if got != e.nbytes:
            raise MergeError(f"{path}: tensor {d.name}: merged data has {got} bytes, expected {e.nbytes}")
        sums.append(value)
        pos = e.end
    out.write(skel[spos:])
    return sums


# ---------------------------------------------------------------------------------------------
# writing the result
# ---------------------------------------------------------------------------------------------


def write_merged(plan: MergePlan, store: ChunkStore, out: BinaryIO, block_bytes: int = 1 << 20) -> None:
    """Write the merged file of a clean plan to ``out`` (a seekable binary file)."""
    if not plan.clean:
        raise MergeError(f"{plan.path}: the merge has conflicts")
    if plan.whole is not None:
        from .smudge import smudge

        smudge(plan.ours if plan.whole == "ours" else plan.theirs, store, out.write, path=plan.path)
        return
    assert plan.container is not None
    plan.container.write(plan, store, out, block_bytes)


def merged_pointer(plan: MergePlan, repo: Repo) -> Pointer:
    """The pointer of the merged file: one side's pointer, or the merged file built and cleaned."""
    if not plan.clean:
        raise MergeError(f"{plan.path}: the merge has conflicts")
    if plan.whole == "ours":
        return plan.ours
    if plan.whole == "theirs":
        return plan.theirs
    store = repo.store
    tmpdir = repo.store_root / "tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=tmpdir, prefix="merge-") as f:
        write_merged(plan, store, f, repo.chunk_bytes)
        f.flush()
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            data: memoryview | bytes = b""
            return clean(data, store, chunk_bytes=repo.chunk_bytes).pointer
        m = MappedFile(f.fileno())
        try:
            res = clean(
                m,
                store,
                previous=plan.ours,
                recent=RecentTensors(repo.store_root / "recent"),
                chunk_bytes=repo.chunk_bytes,
                workers=repo.workers,
            )
        finally:
            m.close()
    return res.pointer


def parse_pointer_or_none(data: bytes) -> Pointer | None:
    """A pointer if ``data`` is one, else None."""
    if not ptr.looks_like_pointer(data):
        return None
    try:
        return ptr.parse(data)
    except CoralError:
        return None
