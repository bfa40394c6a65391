"""``git coral migrate export``: coral pointers back to git-lfs pointers (objects into .git/lfs/objects)
or to plain file blobs, for hosts and people without coral-git."""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from dataclasses import dataclass

import pygit2

from ..core import pointer as ptr
from ..filter.smudge import smudge
from ..git.repo import Repo
from . import attributes, lfs
from .patterns import PathFilter
from .rewrite import Rewriter, Selection


@dataclass
class ExportStats:
    commits: int = 0
    rewritten: int = 0
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


class Exporter:
    """One coral pointer blob -> an LFS pointer blob (object written to .git/lfs/objects) or the file itself."""

    def __init__(self, repo: Repo, to: str, stats: ExportStats) -> None:
        self.repo = repo
        self.git = repo.pygit
        self.plain = to == "plain"
        self.stats = stats
        self.done: dict[str, pygit2.Oid | None] = {}
        self.tmpdir = repo.store_root / "tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)

    def __call__(self, path: str, oid: pygit2.Oid) -> pygit2.Oid | None:
        key = str(oid)
        if key in self.done:
            return self.done[key]
        blob = self.git[oid]
        p = ptr.parse_or_none(blob.data) if blob.size <= ptr.MAX_POINTER else None
        if p is None:
            self.done[key] = None
            return None
        tmp = self.tmpdir / f"export-{os.getpid()}-{secrets.token_hex(4)}"
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as f:

                def write(mv: memoryview) -> None:
                    h.update(mv)
                    f.write(mv)

                smudge(p, self.repo.store, write, path=path, workers=self.repo.workers)
            if self.plain or p.size == 0:  # git-lfs keeps empty files as empty blobs, not pointers
                new = self.git.create_blob_fromdisk(str(tmp))
            else:
                oid_hex = h.hexdigest()
                lfs.store_object(self.repo.common_dir, tmp, oid_hex)
                new = self.git.create_blob(lfs.LfsPointer(oid_hex, p.size).encode())
        finally:
            tmp.unlink(missing_ok=True)
        self.stats.files += 1
        self.stats.bytes += p.size
        self.done[key] = new
        return new


def run_export(repo: Repo, sel: Selection, paths: PathFilter, to: str, progress: bool = True) -> tuple[ExportStats, Rewriter]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from ..ui import progress as bar

    stats = ExportStats(commits=len(sel.commits))
    conv = Exporter(repo, to, stats)

    def blob_fn(path: str, oid: pygit2.Oid) -> pygit2.Oid | None:
        return conv(path, oid) if paths.hit(path) is not None else None

    def attrs_fn(text: str | None, hits: set[str]) -> str | None:
        if text is None:
            return None
        new = attributes.to_lfs(text, plain=to == "plain", patterns=None if paths.include == ["*"] else paths.include)
        return text if new.splitlines() == text.splitlines() else new

    rw = Rewriter(repo.pygit, blob_fn, attrs_fn, paths.hit)
    started = time.perf_counter()
    with bar(TextColumn(f"coral: exporting to {to}"), BarColumn(), MofNCompleteColumn(), TextColumn("commits"), TimeElapsedColumn(), enabled=progress) as pb:
        task = pb.add_task("export", total=len(sel.commits))
        for sha in sel.commits:
            if rw.commit(sha) != sha:
                stats.rewritten += 1
            pb.update(task, advance=1)
    stats.seconds = time.perf_counter() - started
    return stats, rw
