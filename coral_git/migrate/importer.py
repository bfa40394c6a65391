"""``git coral migrate import``: git-lfs pointers and plain model blobs in history become coral pointers."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pygit2

from ..core import pointer as ptr
from ..core.mapped import MappedFile
from ..errors import UsageError
from ..filter.clean import clean
from ..git.repo import Repo, run_git
from ..store.chunkstore import ChunkStore
from ..store.recent import RecentTensors
from . import attributes, lfs
from .patterns import PathFilter
from .rewrite import Rewriter, Selection

# plain blobs up to this size are cleaned from memory, larger ones streamed through a temp file
IN_MEMORY = int(os.environ.get("CORAL_MIGRATE_IN_MEMORY", 64 << 20))
BLOBMAP = "migrate/import-blobs"  # under .git/coral: blob id -> pointer blob id, kept across runs


@dataclass
class ImportStats:
    commits: int = 0
    rewritten: int = 0
    files: int = 0  # distinct blobs converted
    lfs_files: int = 0
    lfs_bytes: int = 0  # bytes of the distinct LFS objects converted
    plain_bytes: int = 0  # bytes of the distinct plain blobs converted
    kept_lfs: set[str] = field(default_factory=set)  # excluded paths left as LFS pointers
    seconds: float = 0.0


class Converter:
    """Turns one blob (an LFS pointer or a plain file) into a coral pointer, storing its chunks."""

    def __init__(self, repo: Repo, store: ChunkStore, recent: RecentTensors | None, write_blobs: bool, stats: ImportStats) -> None:
        self.repo = repo
        self.git = repo.pygit
        self.store = store
        self.recent = recent
        self.write_blobs = write_blobs
        self.stats = stats
        self.last: dict[str, ptr.Pointer] = {}  # path -> its latest pointer: the delta base of the next version
        self.done: dict[str, str] = {}
        self._earlier: dict[str, str] = {}  # from an earlier (maybe interrupted) run: checked before use
        self._mapfile = repo.store_root / BLOBMAP
        if write_blobs and self._mapfile.exists():
            for line in self._mapfile.read_text().splitlines():
                a, _, b = line.partition(" ")
                if b:
                    self._earlier[a] = b

    def __call__(self, path: str, oid: pygit2.Oid) -> pygit2.Oid | None:
        key = str(oid)
        if key in self.done:
            new = self.done[key]
            return None if new == key else pygit2.Oid(hex=new)
        if key in self._earlier and self._still_stored(self._earlier[key]):
            self.done[key] = self._earlier[key]
            return pygit2.Oid(hex=self._earlier[key])
        size = self.git.odb.read_header(oid)[1]
        if size > IN_MEMORY:  # a big plain file: never the whole blob in memory
            res = self._clean_large_blob(oid, path)
            self.stats.plain_bytes += size
            return self._done(key, path, res)
        blob = self.git[oid]
        if blob.size <= ptr.MAX_POINTER and ptr.looks_like_pointer(blob.data[: len(ptr.MAGIC)]):
            self.done[key] = key  # already coral (a second run)
            return None
        lp = lfs.parse(blob.data) if blob.size <= lfs.MAX_LFS_POINTER else None
        if lp is None and blob.size <= lfs.MAX_LFS_POINTER and blob.data.startswith(lfs.SPEC):
            # storing the pointer text itself would check out as pointer text, not the model
            raise UsageError(
                f"{path} is a git-lfs pointer in a form coral does not read (extensions or non-canonical); "
                f"leave it in git-lfs with --exclude '{path}'"
            )
        if lp is not None:
            obj = lfs.ensure_object(self.repo.common_dir, self.repo.worktree, lp, path)
            with open(obj, "rb") as f:
                mf = MappedFile(f.fileno())
                try:
                    res = self._clean(mf, path)
                finally:
                    mf.close()
            self.stats.lfs_files += 1
            self.stats.lfs_bytes += lp.size
        else:
            res = self._clean(blob.data, path)
            self.stats.plain_bytes += blob.size
        return self._done(key, path, res)

    def _still_stored(self, pointer_blob: str) -> bool:
        """The pointer blob exists and the store still has every chunk it names (no gc since)."""
        try:
            p = ptr.parse_or_none(self.git[pointer_blob].data)
        except (KeyError, ValueError):
            return False
        return p is not None and all(self.store.has(c) for c in p.chunk_ids())

    def _done(self, key: str, path: str, res: ptr.Pointer) -> pygit2.Oid:
        self.stats.files += 1
        self.last[path] = res
        data = res.encode()
        new = self.git.create_blob(data) if self.write_blobs else pygit2.hash(data)
        self.done[key] = str(new)
        if self.write_blobs:
            with open(self._mapfile, "a") as f:
                f.write(f"{key} {new}\n")
        return new

    def _clean_large_blob(self, oid: pygit2.Oid, path: str) -> ptr.Pointer:
        """A big plain blob: streamed by git into a temp file, then cleaned through a mapping."""
        tmpdir = self.repo.store_root / "tmp"
        tmpdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=tmpdir, prefix="migrate-") as f:
            # git cat-file streams big blobs; libgit2 would inflate the whole object in memory
            if run_git(["cat-file", "blob", str(oid)], self.repo.git_dir, stdout=f).returncode != 0:
                raise UsageError(f"{path}: git cannot read blob {oid}; run 'git fsck'")
            f.flush()
            mf = MappedFile(f.fileno())
            try:
                return self._clean(mf, path)
            finally:
                mf.close()

    def _clean(self, data: bytes | MappedFile, path: str) -> ptr.Pointer:
        return clean(
            data,
            self.store,
            previous=self.last.get(path),
            recent=self.recent,
            chunk_bytes=self.repo.chunk_bytes,
            workers=self.repo.workers,
        ).pointer


def run_import(
    repo: Repo, sel: Selection, paths: PathFilter, *, dry_run: bool, progress: bool = True
) -> tuple[ImportStats, Rewriter, int]:
    """Convert the selected history; return stats, the rewriter (commit map) and the store bytes added.

    With ``dry_run`` the chunks go to a scratch store that is measured and deleted, and no git object
    or ref is written.
    """
    from ..ui import progress as bar

    stats = ImportStats(commits=len(sel.commits))
    scratch = None
    if dry_run:
        scratch = Path(tempfile.mkdtemp(prefix="migrate-dry-", dir=_tmp(repo)))
        store = ChunkStore(scratch)
        recent = RecentTensors(scratch / "recent")
        before = 0
    else:
        store = repo.store
        recent = RecentTensors(repo.store_root / "recent")
        (repo.store_root / BLOBMAP).parent.mkdir(parents=True, exist_ok=True)
        before = _dir_bytes(repo.store_root / "objects") + _dir_bytes(repo.store_root / "packs")
    conv = Converter(repo, store, recent, not dry_run, stats)

    def blob_fn(path: str, oid: pygit2.Oid) -> pygit2.Oid | None:
        if paths.hit(path) is not None:
            return conv(path, oid)
        ex = paths.excluded(path)
        if ex is not None:
            blob = repo.pygit[oid]
            if blob.size <= lfs.MAX_LFS_POINTER and lfs.parse(blob.data) is not None:
                stats.kept_lfs.add(ex)
        return None

    def attrs_fn(text: str | None, hits: set[str]) -> str | None:
        if text is None and not hits:
            return None
        keep = {p for p in stats.kept_lfs if p}
        new = attributes.to_coral(text or "", paths.include, hits, keep)
        return text if text is not None and new.splitlines() == text.splitlines() else new

    rw = Rewriter(repo.pygit, blob_fn, attrs_fn, paths.hit)
    started = time.perf_counter()
    seen: set[tuple[str, str]] = set()
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

        with bar(TextColumn("coral: migrating"), BarColumn(), MofNCompleteColumn(), TextColumn("commits"), TimeElapsedColumn(), enabled=progress) as pb:
            task = pb.add_task("migrate", total=len(sel.commits))
            for sha in sel.commits:
                if dry_run:
                    _walk(repo.pygit, repo.pygit[sha].tree_id, "", blob_fn, seen)  # into the scratch store only
                else:
                    if rw.commit(sha) != sha:
                        stats.rewritten += 1
                pb.update(task, advance=1)
        stats.seconds = time.perf_counter() - started
        if dry_run:
            added = _dir_bytes(scratch / "objects")
        else:
            added = _dir_bytes(repo.store_root / "objects") + _dir_bytes(repo.store_root / "packs") - before
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return stats, rw, added


def _walk(g: pygit2.Repository, oid: pygit2.Oid, prefix: str, blob_fn, seen: set[tuple[str, str]]) -> None:
    """Call ``blob_fn`` on every file of a tree once per (tree, place), writing nothing to git."""
    if (str(oid), prefix) in seen:
        return
    seen.add((str(oid), prefix))
    for entry in g[oid]:
        if entry.filemode == pygit2.GIT_FILEMODE_TREE:
            _walk(g, entry.id, prefix + entry.name + "/", blob_fn, seen)
        elif entry.filemode in (pygit2.GIT_FILEMODE_BLOB, pygit2.GIT_FILEMODE_BLOB_EXECUTABLE):
            if prefix or entry.name != ".gitattributes":
                blob_fn(prefix + entry.name, entry.id)


def _tmp(repo: Repo) -> str:
    d = repo.store_root / "tmp"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def _dir_bytes(root: Path) -> int:
    if not root.exists():
        return 0
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total
