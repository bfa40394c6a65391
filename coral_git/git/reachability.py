"""Every coral pointer that the repository can still reach, and where each one is used.

Roots are what git's own gc keeps: every ref, every reflog entry, HEAD and the special heads
(MERGE_HEAD, ORIG_HEAD, ...), every stage of the index, every stash entry (a stash commit's parents
hold its index and untracked files), and the HEAD, index, reflogs and per-worktree refs of every
linked worktree. The walk goes through pygit2; each tree and each blob is read at most once
(trees are memoised to the pointer files below them), so the cost is one pass over the unique
objects of the history. A blob counts as a pointer when its content starts with the pointer magic;
blobs larger than a pointer can be are never read.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..core import pointer as ptr
from ..errors import CoralError, StoreError

_HEX40 = re.compile(rb"[0-9a-f]{40}")
SPECIAL_HEADS = ("HEAD", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REVERT_HEAD", "ORIG_HEAD", "REBASE_HEAD",
                 "BISECT_HEAD", "AUTO_MERGE", "FETCH_HEAD")
REBASE_FILES = ("rebase-merge/onto", "rebase-merge/orig-head", "rebase-merge/amend", "rebase-merge/stopped-sha",
                "rebase-apply/onto", "rebase-apply/orig-head", "rebase-apply/abort-safety")
MAX_USES = 4  # sightings kept per pointer blob, for reports
GITLINK = 0o160000
MAGIC = ptr.MAGIC_BYTES

Files = tuple[tuple[str, str], ...]  # (path, pointer blob id), sorted by path


@dataclass
class Reachable:
    """The result of a walk: parsed pointers and where they are used."""

    pointers: dict[str, ptr.Pointer] = field(default_factory=dict)
    uses: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # blob id → [(revision, path)]
    broken: dict[str, str] = field(default_factory=dict)  # blob id → why it does not parse
    commits: list[str] = field(default_factory=list)  # commit ids, parents before children
    missing: list[str] = field(default_factory=list)  # git objects that history names but lacks
    dangling: list[str] = field(default_factory=list)  # roots naming absent objects (stale ORIG_HEAD, ...)

    def chunk_ids(self) -> set[str]:
        """Every chunk id any reachable pointer names."""
        out: set[str] = set()
        for p in self.pointers.values():
            out.update(p.chunk_ids())
        return out

    def needed_by(self, chunk_ids: set[str]) -> dict[str, list[tuple[str, str, str]]]:
        """For each of ``chunk_ids``: ``(revision, path, part)`` of the files that need it."""
        out: dict[str, list[tuple[str, str, str]]] = {}
        for blob, p in self.pointers.items():
            parts = [("skeleton", c) for c in p.skeleton]
            parts += [(f"tensor {t.name}", c) for t in p.tensors for c in t.chunks]
            for part, c in parts:
                if c in chunk_ids:
                    for rev, path in self.uses.get(blob, []):
                        out.setdefault(c, []).append((rev, path, part))
        return out


class Walker:
    """Reads the repository's roots and pointer files, memoising trees and blobs."""

    def __init__(self, common_dir: Path) -> None:
        import pygit2

        self.common_dir = Path(common_dir)
        self.repo = pygit2.Repository(str(self.common_dir))
        self._trees: dict[str, Files] = {}
        self._blobs: dict[str, bool] = {}  # blob id → is a pointer (parsed or broken)
        self.result = Reachable()
        self.shallow = self._shallow()

    # -- roots -------------------------------------------------------------------------------
    def git_dirs(self) -> list[tuple[str, Path]]:
        """The main git dir and every linked worktree's private git dir, with a label."""
        out = [("", self.common_dir)]
        wt = self.common_dir / "worktrees"
        if wt.is_dir():
            out += [(f"worktree {d.name}: ", d) for d in sorted(wt.iterdir()) if d.is_dir()]
        return out

    def roots(self) -> Iterator[tuple[str, str]]:
        """``(label, object id)`` of every commit-ish root: refs, reflogs, heads, rebase state."""
        for name in self.repo.references:
            try:
                yield name, str(self.repo.references[name].resolve().target)
            except Exception:  # a dangling symbolic ref names nothing
                continue
        for label, gdir in self.git_dirs():
            for head in SPECIAL_HEADS + REBASE_FILES:
                for oid in _ids_in(gdir / head):
                    yield label + head, oid
            if label:  # per-worktree refs (refs/bisect, refs/worktree, refs/rewritten)
                refs = gdir / "refs"
                for f in sorted(refs.rglob("*")) if refs.is_dir() else []:
                    for oid in _ids_in(f):
                        yield label + str(f.relative_to(gdir)), oid
            logs = gdir / "logs"
            for f in sorted(logs.rglob("*")) if logs.is_dir() else []:
                if f.is_file():
                    name = str(f.relative_to(logs))
                    for n, oid in enumerate(_reflog_ids(f)):
                        yield f"{label}{name}@{{{n}}}", oid

    def index_files(self) -> list[tuple[str, Path]]:
        return [(label + "index", gdir / "index") for label, gdir in self.git_dirs() if (gdir / "index").is_file()]

    def _shallow(self) -> set[str]:
        try:
            return set((self.common_dir / "shallow").read_text().split())
        except OSError:
            return set()

    # -- objects -----------------------------------------------------------------------------
    def blob(self, oid: str, rev: str, path: str) -> bool:
        """Read blob ``oid`` once; record it when it is a pointer. True when it is one."""
        known = self._blobs.get(oid)
        if known is None:
            known = self._blobs[oid] = self._read_blob(oid)
        if known:
            uses = self.result.uses.setdefault(oid, [])
            if len(uses) < MAX_USES and (rev, path) not in uses:
                uses.append((rev, path))
        return known

    def _read_blob(self, oid: str) -> bool:
        try:
            _, size = self.repo.odb.read_header(oid)
        except KeyError:
            self.result.missing.append(oid)
            return False
        if size > ptr.MAX_POINTER or size < len(MAGIC):
            return False
        data = self.repo.odb.read(oid)[1]
        if not data.startswith(MAGIC):
            return False
        try:
            self.result.pointers[oid] = ptr.parse(data)
        except CoralError as exc:
            self.result.broken[oid] = str(exc)
        return True

    def tree(self, oid: str, rev: str, prefix: str = "") -> Files:
        """The pointer files under tree ``oid`` as ``(relative path, blob id)``, memoised by tree id."""
        files = self._trees.get(oid)
        if files is not None:
            for path, blob in files:
                self.blob(blob, rev, prefix + path)
            return files
        try:
            tree = self.repo[oid]
        except KeyError:
            self.result.missing.append(oid)
            return ()
        out: list[tuple[str, str]] = []
        for e in tree:
            if e.filemode == GITLINK:
                continue
            eid = str(e.id)
            if e.type_str == "tree":
                out.extend((f"{e.name}/{p}", b) for p, b in self.tree(eid, rev, f"{prefix}{e.name}/"))
            elif e.type_str == "blob" and self.blob(eid, rev, prefix + e.name):
                out.append((e.name, eid))
        files = self._trees[oid] = tuple(out)
        return files

    def commits(self, tips: list[tuple[str, str]]) -> dict[str, Files]:
        """Walk every commit reachable from ``tips``; return each commit's pointer files.

        Commits are visited parents first, so ``result.commits`` is in history order.
        """
        import pygit2

        files: dict[str, Files] = {}
        label: dict[str, str] = {}
        stack: list[tuple[str, bool]] = []
        for name, oid in reversed(tips):
            if not self.repo.odb.exists(oid):
                self.result.dangling.append(f"{name} {oid}")  # git may have pruned it (git gc)
                continue
            stack.append((oid, False))
            label.setdefault(oid, name)
        while stack:
            oid, expanded = stack.pop()
            if oid in files and not expanded:
                continue
            try:
                obj = self.repo[oid]
            except (KeyError, ValueError):
                self.result.missing.append(oid)
                files[oid] = ()
                continue
            if isinstance(obj, pygit2.Tag):
                target = str(obj.target)
                label.setdefault(target, label.get(oid, oid))
                files[oid] = ()
                stack.append((target, False))
                continue
            if isinstance(obj, pygit2.Blob):
                self.blob(oid, label.get(oid, oid), label.get(oid, oid))
                files[oid] = ()
                continue
            if isinstance(obj, pygit2.Tree):
                files[oid] = self.tree(oid, label.get(oid, oid))
                continue
            if not expanded:
                stack.append((oid, True))
                files[oid] = ()  # placeholder: in progress
                parents = [] if oid in self.shallow else [str(p) for p in obj.parent_ids]
                for p in parents:
                    label.setdefault(p, label[oid])
                    if p not in files:
                        stack.append((p, False))
                continue
            rev = f"{oid[:12]} ({label[oid]})"
            files[oid] = self.tree(str(obj.tree_id), rev)
            self.result.commits.append(oid)
        return files

    def index(self, path: Path, label: str) -> Files:
        """Pointer files staged in an index file, every stage (a conflicted merge has three)."""
        import pygit2

        try:
            idx = pygit2.Index(str(path))
        except Exception as exc:
            raise StoreError(f"cannot read {path}: {exc}; refusing to guess what it references") from None
        out = []
        for e in idx:
            if e.mode == GITLINK:
                continue
            oid = str(e.id)
            if self.blob(oid, label, e.path):
                out.append((e.path, oid))
        return tuple(out)


def _ids_in(path: Path) -> list[str]:
    """Object ids in a head file (``MERGE_HEAD`` may hold several; ``FETCH_HEAD`` has one per line)."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    if data.startswith(b"ref:"):
        return []  # symbolic: the ref itself is a root already
    return [m.decode() for m in _HEX40.findall(data) if m != b"0" * 40]


def _reflog_ids(path: Path) -> Iterator[str]:
    try:
        with open(path, "rb") as f:
            for line in f:
                for oid in line.split(b" ", 2)[:2]:
                    if len(oid) == 40 and oid != b"0" * 40 and _HEX40.fullmatch(oid):
                        yield oid.decode()
    except OSError:
        return


Progress = Callable[[str, int, int], None]


def walk(common_dir: Path | str, progress: Progress | None = None) -> tuple[Reachable, dict[str, Files], Walker]:
    """Walk every root of the repository at ``common_dir``.

    Returns the result, each commit's pointer files (plus index files under their labels) and the
    walker (for further lookups).
    """
    w = Walker(Path(common_dir))
    tips = list(dict.fromkeys(w.roots()))
    if progress:
        progress("walking history", 0, len(tips))
    files = w.commits(tips)
    for label, path in w.index_files():
        files[label] = w.index(path, label)
    if progress:
        progress("walking history", len(tips), len(tips))
    return w.result, files, w


def reachable(common_dir: Path | str, progress: Progress | None = None) -> Reachable:
    """Every pointer reachable from any root of the repository at ``common_dir``."""
    return walk(common_dir, progress)[0]

