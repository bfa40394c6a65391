"""Writing a clean merge plan: the merged file (streamed), and its pointer (the file cleaned into the store)."""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO

from ..core.mapped import MappedFile
from ..core.pointer import Pointer
from ..errors import MergeError
from ..filter.clean import clean
from ..git.repo import Repo
from ..store.chunkstore import ChunkStore
from ..store.recent import RecentTensors
from .model import MergePlan


def write_merged(plan: MergePlan, store: ChunkStore, out: BinaryIO, block_bytes: int = 1 << 20) -> None:
    """Write the merged file of a clean plan to ``out`` (a seekable binary file)."""
    if not plan.clean:
        raise MergeError(f"{plan.path}: the merge has conflicts")
    if plan.whole is not None:
        from ..filter.smudge import smudge

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
