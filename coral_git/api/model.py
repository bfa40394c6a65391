"""The Python API: any model file at any revision as a lazy mapping ``name → tensor``.

    import coral_git
    with coral_git.open("model.safetensors", rev="HEAD~3") as m:
        w = m["layers.0.weight"]                 # numpy array, decoded on access
        z = m.zarr("layers.0.weight")            # zarr array: m.zarr(...)[:8] decodes one chunk
    for fd in coral_git.diff("HEAD~1", "HEAD"):  # the records `git coral diff` prints
        ...

Nothing is checked out and nothing is written. torch is optional (``ModelFile.torch``,
:func:`load_torch`) and imported only when those are called.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import pointer as ptr
from ..core.chunking import DEFAULT_CHUNK_BYTES, chunk_shape
from ..diffs.tensordiff import (
    FileDiff,
    Side,
    Source,
    ValueStats,
    View,
    diff_files,
    entry_ranges,
    hash_pointer,
    numpy_dtype,
    read_view,
    to_numpy,
    value_stats,
    views,
)
from ..dtypes import DTYPE_BITS, itemsize
from ..errors import CoralError, NotARepositoryError, UsageError
from ..formats.shardindex import is_index_path
from ..git.repo import DEFAULT_WORKERS, Repo, find_repo, git
from . import sharded

RepoLike = Repo | str | os.PathLike[str] | None


def _repo(repo: RepoLike) -> Repo:
    return repo if isinstance(repo, Repo) else find_repo(repo)


def _relpath(r: Repo, path: str | os.PathLike[str], base: RepoLike) -> str:
    """``path`` relative to the top of the work tree (relative paths are taken from ``base`` or cwd)."""
    p = Path(path)
    if r.worktree is None:
        return p.as_posix()
    if not p.is_absolute():
        start = Path(base) if isinstance(base, (str, os.PathLike)) else Path.cwd()
        p = start / p
    try:
        return Path(os.path.realpath(p)).relative_to(os.path.realpath(r.worktree)).as_posix()
    except ValueError:
        raise UsageError(f"{path} is outside the repository at {r.worktree}") from None


def _near(path: str | os.PathLike[str]) -> str | None:
    """The nearest existing directory of ``path``: the repository is found from there."""
    d = Path(os.path.abspath(path)).parent
    while not d.is_dir() and d != d.parent:
        d = d.parent
    return str(d)


@dataclass(frozen=True)
class TensorInfo:
    """What the pointer says about one tensor (no decoding)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    chunks: int
    numpy_dtype: np.dtype


class ModelFile(Mapping[str, np.ndarray]):
    """A model file at one revision: ``m[name]`` decodes that tensor only. Use as a context manager."""

    def __init__(self, path: str, pointer: ptr.Pointer, source: Source, repo: Repo | None, stack: ExitStack | None = None) -> None:
        self.path = path
        self.pointer = pointer
        self.source = source
        self.repo = repo  # None for a file opened outside any repository
        self.workers = repo.workers if repo is not None else DEFAULT_WORKERS
        self._stack = stack
        self._views = views(pointer, source)

    # -- Mapping -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> np.ndarray:
        v = self._view(name)
        return to_numpy(read_view(v, self.source), v.dtype).reshape(v.shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def __repr__(self) -> str:
        return f"<ModelFile {self.path} {self.pointer.format} {len(self)} tensors>"

    def _view(self, name: str) -> View:
        try:
            return self._views[name]
        except KeyError:
            raise KeyError(f"no tensor {name!r} in {self.path}") from None

    # -- more ways to read ------------------------------------------------------------------------
    @property
    def format(self) -> str:
        return self.pointer.format

    def info(self, name: str) -> TensorInfo:
        v = self._view(name)
        return TensorInfo(name, v.dtype, v.shape, v.nbytes, len(v.pieces()), numpy_dtype(v.dtype))

    def raw(self, name: str) -> bytes:
        """The tensor's exact bytes as stored in the file (C order)."""
        return read_view(self._view(name), self.source).tobytes()

    def stats(self, name: str) -> ValueStats | None:
        """mean/std/min/max… of one tensor, streamed chunk by chunk (None for non-numeric dtypes)."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return value_stats(self._view(name), self.source, pool)

    def zarr(self, name: str) -> Any:
        """A read-only zarr array over the tensor: slicing decodes only the chunks it touches."""
        import zarr

        return zarr.open_array(store=tensor_store(self._view(name), self.source), mode="r")

    def torch(self, name: str) -> Any:
        """The tensor as a torch tensor with its own dtype (bf16/fp8 exact); needs torch."""
        import torch

        v = self._view(name)
        raw = read_view(v, self.source)
        tdt = _TORCH.get(v.dtype)
        if tdt is None or not hasattr(torch, tdt):
            raise UsageError(f"{self.path}: dtype {v.dtype} of {name!r} has no torch equivalent")
        t = torch.frombuffer(bytearray(raw.tobytes()), dtype=torch.uint8) if raw.size else torch.empty(0, dtype=torch.uint8)
        return t.view(getattr(torch, tdt)).reshape(v.shape)

    def state_dict(self, *, as_torch: bool = False) -> dict[str, Any]:
        """Every tensor decoded, as numpy arrays (or torch tensors)."""
        return {n: (self.torch(n) if as_torch else self[n]) for n in self}

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        if self._stack is not None:
            self._views = {}
            self.source = None  # type: ignore[assignment]
            self._stack.close()
            self._stack = None

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_TORCH = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "BOOL": "bool", "C64": "complex64", "C128": "complex128", "C32": "complex32",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip


def open(path: str | os.PathLike[str], rev: str | None = "HEAD", *, repo: RepoLike = None) -> ModelFile:
    """Open ``path`` as it is at ``rev`` (a commit-ish; ``""`` for the index; None for the work tree).

    Relative paths are taken from ``repo`` when it is a directory, else from the current directory.
    """
    r = _repo(repo if repo is not None else _near(path))
    rel = _relpath(r, path, repo)
    if is_index_path(rel):
        got = _open_sharded(r, rel, rev)
        if got is not None:
            return got
    if rev is None:
        if r.worktree is None:
            raise UsageError("a bare repository has no work tree; pass a revision")
        return open_file(r.worktree / rel, repo=r, name=rel)
    spec = f"{rev}:{rel}"
    oid = git("rev-parse", "--verify", "--quiet", spec, cwd=r.worktree or r.git_dir, check=False)
    if not oid:
        raise UsageError(f"{spec} does not name a file in the repository")
    side, stack = blob_side(r, oid)
    assert side.pointer is not None and side.source is not None
    return ModelFile(rel, side.pointer, side.source, r, stack)


def _open_sharded(r: Repo, rel: str, rev: str | None) -> ModelFile | None:
    """The shards an ``*.index.json`` names, as one model (None: not a shard index, open it as a file)."""
    stack = ExitStack()
    got = sharded.model_side(r, stack, rev, rel, lambda st, p, blob: _side(r, st, p, blob))
    if got is None or got[0].pointer is None:
        stack.close()
        if got is not None:
            raise UsageError(f"{rel} does not exist at {'the work tree' if rev is None else rev or 'the index'}")
        return None
    side = got[0]
    assert side.pointer is not None and side.source is not None
    return ModelFile(rel, side.pointer, side.source, r, stack)


def open_file(path: str | os.PathLike[str], *, repo: RepoLike = None, name: str | None = None) -> ModelFile:
    """Open any model file on disk (hashed in memory, mapped, nothing stored) with the same API,
    inside a repository or not: outside one the repository's settings are the defaults."""
    from ..core.mapped import mapped_array

    try:
        r: Repo | None = _repo(repo if repo is not None else Path(path).parent)
    except NotARepositoryError:
        if repo is not None:
            raise
        r = None
    stack = ExitStack()
    buf = stack.enter_context(mapped_array(os.fspath(path)))
    chunk_bytes = r.chunk_bytes if r is not None else DEFAULT_CHUNK_BYTES
    p, src = hash_pointer(memoryview(buf), chunk_bytes, workers=r.workers if r is not None else DEFAULT_WORKERS)
    if r is not None:
        src.fallback = r.store
    return ModelFile(name or os.fspath(path), p, src, r, stack)


def blob_side(r: Repo, oid: str) -> tuple[Side, ExitStack | None]:
    """A blob as a diff side: its pointer with the store, or (a file stored before coral) its bytes hashed."""
    from ..diffs.driver import blob_pointer

    p = blob_pointer(r, oid)
    if p is not None:
        return Side(p, r.store), None
    data = r.pygit[oid].data
    p2, src = hash_pointer(data, r.chunk_bytes, workers=r.workers)
    src.fallback = r.store
    return Side(p2, src), None


# ---------------------------------------------------------------------------------------------
# diff
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One file that differs between two trees (``None`` blob id: missing; ``"worktree"``: the file on disk)."""

    path: str
    old: str | None
    new: str | None


def changes(r: Repo, revs: list[str], paths: Iterable[str] = (), *, cached: bool = False) -> list[Change]:
    """Files git reports as changed between ``revs`` (0, 1 or 2 of them, like ``git diff``)."""
    if len(revs) > 2:
        raise UsageError("give at most two revisions")
    args = ["diff", "--raw", "-z", "--no-abbrev", "--no-renames", "--ignore-submodules", "--no-ext-diff"]
    if cached:
        args.append("--cached")
    args += [*revs, "--", *paths]
    out = git(*args, cwd=r.worktree or r.git_dir)
    items = out.split("\0")
    res = []
    i = 0
    while i + 1 < len(items):
        meta, path = items[i], items[i + 1]
        i += 2
        if not meta.startswith(":"):
            continue
        _, _, a, b, status = meta[1:].split(" ")[:5]
        old = None if status.startswith("A") or not a.strip("0") else a
        new = None if status.startswith("D") else (b if b.strip("0") else "worktree")
        res.append(Change(path, old, new))
    return res


def _coral_paths(r: Repo, paths: list[str]) -> set[str]:
    if not paths:
        return set()
    out = git("check-attr", "-z", "--stdin", "filter", cwd=r.worktree or r.git_dir, input=("\0".join(paths) + "\0").encode())
    items = out.split("\0")
    return {items[k] for k in range(0, len(items) - 2, 3) if items[k + 2] == "coral"}


def diff(
    a: str | None = None,
    b: str | None = None,
    *,
    paths: Iterable[str | os.PathLike[str]] = (),
    cached: bool = False,
    tensors: Iterable[str] | None = None,
    stats: bool = True,
    order: str = "change",
    repo: RepoLike = None,
) -> list[FileDiff]:
    """Per-tensor diffs of every coral file that changed, like ``git diff [--cached] [a [b]]``.

    ``a``/``b`` as in git: none → index vs work tree; ``a`` → ``a`` vs work tree (or index with
    ``cached``); both → ``a`` vs ``b``. ``tensors`` are glob patterns on tensor names.
    """
    r = _repo(repo)
    revs = [x for x in (a, b) if x is not None]
    rels = [_relpath(r, p, repo) for p in paths]
    found = changes(r, revs, rels, cached=cached)
    # sharded checkpoints (an *.index.json and its shards) are diffed as one model, by tensor name;
    # an index given as a path stands for its shards too: the changes of its directory are looked at
    index_dirs = [posixpath.dirname(p) or "." for p in rels if is_index_path(p)]
    around = changes(r, revs, index_dirs, cached=cached) if index_dirs else found
    old_spec = revs[0] if revs else ("HEAD" if cached else "")
    new_spec = revs[1] if len(revs) == 2 else ("" if cached else None)
    out, covered = sharded.diff_models(
        r, [c.path for c in around], old_spec, new_spec, lambda st, p, blob: _side(r, st, p, blob),
        stats=stats, tensors=tensors, order=order,
    )  # fmt: skip
    found = [c for c in found if c.path not in covered]
    coral = _coral_paths(r, [c.path for c in found])
    for c in found:
        if c.path not in coral:
            from ..diffs.driver import blob_pointer

            if not any(x not in (None, "worktree") and blob_pointer(r, x) is not None for x in (c.old, c.new)):
                continue
        with ExitStack() as stack:
            old = _side(r, stack, c.path, c.old)
            new = _side(r, stack, c.path, c.new)
            out.append(diff_files(c.path, old, new, stats=stats, tensors=tensors, order=order, workers=r.workers))
    return out


def _side(r: Repo, stack: ExitStack, path: str, blob: str | None) -> Side:
    if blob is None:
        return Side(None, None)
    if blob == "worktree":
        from ..core.mapped import mapped_array

        assert r.worktree is not None
        buf = stack.enter_context(mapped_array(os.fspath(r.worktree / path)))
        p, src = hash_pointer(memoryview(buf), r.chunk_bytes, workers=r.workers)
        src.fallback = r.store
        return Side(p, src)
    return blob_side(r, blob)[0]


# ---------------------------------------------------------------------------------------------
# show and log
# ---------------------------------------------------------------------------------------------


def stored_size(r: Repo, cid: str) -> int | None:
    """Bytes the store spends on chunk ``cid`` (its loose object file), None if not local."""
    try:
        return os.path.getsize(r.store.loose.path(cid))
    except OSError:
        data = r.store.read_object_local(cid)
        return None if data is None else len(data)


def tensor_table(m: ModelFile, *, stats: bool = True) -> list[dict[str, Any]]:
    """One record per tensor: name, dtype, shape, bytes, stored bytes, value statistics."""
    rows = []
    with ThreadPoolExecutor(max_workers=m.repo.workers) as pool:
        for name, v in m._views.items():
            ids = {p[0] for p in v.pieces()}
            sizes = [stored_size(m.repo, c) for c in ids]
            st = value_stats(v, m.source, pool) if stats else None
            rows.append({
                "name": name, "dtype": v.dtype, "shape": list(v.shape), "nbytes": v.nbytes,
                "stored": None if any(s is None for s in sizes) else sum(s or 0 for s in sizes),
                "chunks": len(ids), "stats": st.as_dict() if st is not None else None,
            })  # fmt: skip
    return rows


def tensor_summary(m: ModelFile, name: str, head: int = 8) -> dict[str, Any]:
    """One tensor in detail: layout, content id, statistics and its first values."""
    from ..diffs.tensordiff import content_id

    v = m._view(name)
    info = m.info(name)
    rec: dict[str, Any] = {
        "name": name, "dtype": v.dtype, "shape": list(v.shape), "numel": v.numel, "nbytes": v.nbytes,
        "chunks": info.chunks, "content_id": content_id(v),
    }  # fmt: skip
    ids = {p[0] for p in v.pieces()}
    sizes = [stored_size(m.repo, c) for c in ids]
    rec["stored"] = None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)
    st = m.stats(name)
    if st is not None:
        rec.update(st.as_dict())
        pieces = v.pieces()
        first = np.empty(0)
        if pieces and v.strides is None:
            cid, off, a, b = pieces[0]
            elem = max(1, DTYPE_BITS.get(v.dtype, 8) // 8)
            raw = m.source.get(cid, name)[off : off + min(b - a, head * elem)]
            first = to_numpy(raw[: raw.size - raw.size % elem], v.dtype)[:head]
        rec["first"] = [x.item() if hasattr(x, "item") else x for x in first]
    return rec


def history(
    path: str | os.PathLike[str],
    *,
    tensors: Iterable[str] | None = None,
    stats: bool = False,
    max_count: int | None = None,
    rev: str = "HEAD",
    repo: RepoLike = None,
) -> list[dict[str, Any]]:
    """Commits (newest first, first-parent) that changed ``path``, each with the diff against its parent.

    Commits where no selected tensor changed are left out when ``tensors`` is given.
    """
    r = _repo(repo if repo is not None else _near(path))
    rel = _relpath(r, path, repo)
    args = ["log", "--first-parent", "--format=%H%x00%ad%x00%s", "--date=short", rev]
    if is_index_path(rel):
        return _sharded_history(r, rel, args, tensors=tensors, stats=stats, max_count=max_count)
    out = git(*args, "--", rel, cwd=r.worktree or r.git_dir)
    res = []
    for line in out.splitlines():
        sha, date, subject = line.split("\0", 2)
        commit = r.pygit[sha]
        new_oid = _blob_at(commit.tree, rel)
        old_oid = _blob_at(commit.parents[0].tree, rel) if commit.parents else None
        if new_oid == old_oid:
            continue
        old = blob_side(r, old_oid)[0] if old_oid else Side(None, None)
        new = blob_side(r, new_oid)[0] if new_oid else Side(None, None)
        fd = diff_files(rel, old, new, stats=stats, tensors=tensors, workers=r.workers)
        if tensors and not fd.tensors:
            continue
        res.append({"commit": sha, "date": date, "subject": subject, "diff": fd})
        if max_count is not None and len(res) >= max_count:
            break
    return res


def _sharded_history(
    r: Repo, rel: str, args: list[str], *, tensors: Iterable[str] | None, stats: bool, max_count: int | None
) -> list[dict[str, Any]]:
    """:func:`history` of a sharded model: commits that changed the index or any of its shards."""
    out = git(*args, "--", posixpath.dirname(rel) or ".", cwd=r.worktree or r.git_dir)
    res: list[dict[str, Any]] = []
    for line in out.splitlines():
        sha, date, subject = line.split("\0", 2)
        parents = r.pygit[sha].parents
        with ExitStack() as stack:
            def side(spec: str | None) -> Side:
                got = sharded.model_side(r, stack, spec, rel, lambda st, p, blob: _side(r, st, p, blob))
                if got is None:
                    raise UsageError(f"{rel} at {spec} is not a shard index of readable shards; use 'git coral log SHARD'")
                return got[0]

            new = side(sha)
            old = side(str(parents[0].id)) if parents else Side(None, None)
            if sharded.same_model(old, new):
                continue
            fd = diff_files(rel, old, new, stats=stats, tensors=tensors, workers=r.workers)
        if tensors and not fd.tensors:
            continue
        res.append({"commit": sha, "date": date, "subject": subject, "diff": fd})
        if max_count is not None and len(res) >= max_count:
            break
    return res


def _blob_at(tree: Any, rel: str) -> str | None:
    try:
        return str(tree[rel].id)
    except KeyError:
        return None


# ---------------------------------------------------------------------------------------------
# torch helpers
# ---------------------------------------------------------------------------------------------


def load_torch(path: str | os.PathLike[str], rev: str | None = "HEAD", *, repo: RepoLike = None) -> dict[str, Any]:
    """``{name: torch.Tensor}`` of a model file at ``rev`` (needs torch; never unpickles anything)."""
    with open(path, rev, repo=repo) as m:
        return m.state_dict(as_torch=True)


# ---------------------------------------------------------------------------------------------
# zarr: a read-only store over one tensor
# ---------------------------------------------------------------------------------------------

def zarr_layout(v: View) -> tuple[tuple[int, ...], tuple[int, ...], np.dtype, bool]:
    """``(shape, chunk shape, numpy dtype, as_bytes)`` of the zarr array for a tensor.

    The grid is the one ``chunking.chunk_shape`` defines, so each zarr chunk is one stored chunk.
    Tensors whose chunks are plain byte ranges (sub-byte dtypes) are shown as 1-d uint8 arrays.
    """
    e = v.entry
    if v.start != 0 or v.nbytes != e.nbytes or v.strides is not None or v.shape != e.shape or v.dtype != e.dtype:
        raise UsageError(f"{v.name}: zarr access needs a tensor that is a whole stored entry; use m[name] instead")
    bits = DTYPE_BITS.get(v.dtype)
    elem = itemsize(v.dtype)  # as chunking.tensor_chunks: complex dtypes are cut as plain bytes
    numel = math.prod(v.shape)
    if bits is not None and not bits % 8 and not v.shape and len(e.chunks) == 1 and not v.dtype.startswith("C"):
        return (), (), numpy_dtype(v.dtype), False
    if bits is None or bits % 8 or numel * elem != v.nbytes or not v.shape:
        return (v.nbytes,), (max(1, v.chunk_bytes),), np.dtype("u1"), True
    if numel == 0:
        return v.shape, tuple(max(1, d) for d in v.shape), numpy_dtype(v.dtype), False
    cs = chunk_shape(v.shape, elem, v.chunk_bytes)
    grid = math.prod(-(-d // c) for d, c in zip(v.shape, cs, strict=True))
    if grid != len(e.chunks) or entry_ranges(e, v.chunk_bytes) is None:
        return (v.nbytes,), (max(1, v.chunk_bytes),), np.dtype("u1"), True
    return v.shape, cs, numpy_dtype(v.dtype), False


_store_class: type | None = None


def tensor_store(view: View, source: Source) -> Any:
    """A read-only zarr v3 store over one tensor (zarr is imported on first use)."""
    global _store_class
    if _store_class is None:
        _store_class = _make_store_class()
    return _store_class(view, source)


def _make_store_class() -> type:
    from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, Store, SuffixByteRequest

    class TensorStore(Store):
        """A read-only zarr v3 store holding one array: ``zarr.json`` from the pointer, chunks from the chunk store."""

        supports_writes = False
        supports_deletes = False
        supports_listing = True
        supports_partial_writes = False  # type: ignore[assignment]

        def __init__(self, view: View, source: Source) -> None:
            super().__init__(read_only=True)
            self.view = view
            self.source = source
            self.shape, self.chunks, self.dtype, self.as_bytes = zarr_layout(view)
            self.grid = tuple(-(-d // c) for d, c in zip(self.shape, self.chunks, strict=True))
            fill: Any = False if self.dtype.kind == "b" else [0.0, 0.0] if self.dtype.kind == "c" else 0
            meta = {
                "zarr_format": 3,
                "node_type": "array",
                "shape": list(self.shape),
                "data_type": self.dtype.name,
                "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": list(self.chunks)}},
                "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
                "fill_value": fill,
                "codecs": [{"name": "bytes", "configuration": {"endian": "little"}} if self.dtype.itemsize > 1 else {"name": "bytes"}],
                "attributes": {"coral": {"name": view.name, "dtype": view.dtype}},
            }
            self.meta = json.dumps(meta).encode()

        def __eq__(self, other: object) -> bool:
            return isinstance(other, TensorStore) and other.view == self.view and other.source is self.source

        __hash__ = None  # type: ignore[assignment]

        def __str__(self) -> str:
            return f"coral://{self.view.name}"

        def _chunk_index(self, key: str) -> int | None:
            if key == "c" and not self.shape:
                return 0
            if not key.startswith("c/"):
                return None
            try:
                idx = tuple(int(x) for x in key[2:].split("/"))
            except ValueError:
                return None
            if len(idx) != len(self.grid) or any(not 0 <= i < g for i, g in zip(idx, self.grid, strict=True)):
                return None
            return int(np.ravel_multi_index(idx, self.grid)) if self.grid else 0

        def _chunk_bytes(self, n: int) -> bytes:
            cid = self.view.entry.chunks[n]
            raw = self.source.get(cid, f"tensor {self.view.name}")
            if self.as_bytes:
                full = self.chunks[0]
                return raw.tobytes() + bytes(full - raw.size)
            arr = to_numpy(raw, self.view.dtype)
            want = math.prod(self.chunks)
            data = arr.tobytes()
            if arr.size < want:  # an edge chunk: zarr wants it padded to the full chunk shape
                data += bytes((want - arr.size) * self.dtype.itemsize)
            return data

        def _bytes(self, key: str) -> bytes | None:
            if key == "zarr.json":
                return self.meta
            n = self._chunk_index(key)
            if n is None:
                return None
            return self._chunk_bytes(n)

        async def get(self, key: str, prototype: Any = None, byte_range: ByteRequest | None = None) -> Any:
            from zarr.core.buffer.core import default_buffer_prototype

            prototype = prototype or default_buffer_prototype()
            data = self._bytes(key)
            if data is None:
                return None
            if isinstance(byte_range, RangeByteRequest):
                data = data[byte_range.start : byte_range.end]
            elif isinstance(byte_range, OffsetByteRequest):
                data = data[byte_range.offset :]
            elif isinstance(byte_range, SuffixByteRequest):
                data = data[-byte_range.suffix :] if byte_range.suffix else b""
            return prototype.buffer.from_bytes(data)

        async def get_partial_values(self, prototype: Any, key_ranges: Iterable[tuple[str, ByteRequest | None]]) -> list[Any]:
            return [await self.get(k, prototype, r) for k, r in key_ranges]

        async def exists(self, key: str) -> bool:
            return key == "zarr.json" or self._chunk_index(key) is not None

        async def set(self, key: str, value: Any) -> None:
            raise CoralError("coral zarr stores are read-only")

        async def delete(self, key: str) -> None:
            raise CoralError("coral zarr stores are read-only")

        def _keys(self) -> Iterator[str]:
            yield "zarr.json"
            if not self.shape:
                yield "c"
                return
            for idx in np.ndindex(*self.grid):
                yield "c/" + "/".join(map(str, idx))

        async def list(self) -> AsyncIterator[str]:
            for k in self._keys():
                yield k

        async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
            for k in self._keys():
                if k.startswith(prefix):
                    yield k

        async def list_dir(self, prefix: str) -> AsyncIterator[str]:
            prefix = prefix.rstrip("/")
            seen = set()
            for k in self._keys():
                if prefix and not k.startswith(prefix + "/"):
                    continue
                rest = k[len(prefix) + 1 :] if prefix else k
                head = rest.split("/", 1)[0]
                if head not in seen:
                    seen.add(head)
                    yield head

    return TensorStore


def __getattr__(name: str) -> Any:
    if name == "TensorStore":
        global _store_class
        if _store_class is None:
            _store_class = _make_store_class()
        return _store_class
    raise AttributeError(name)


__all__ = ["Change", "ModelFile", "TensorInfo", "changes", "diff", "history", "load_torch", "open", "open_file", "tensor_store", "tensor_summary", "tensor_table"]
