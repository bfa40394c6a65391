"""After a conflicted merge: list conflicting tensors and resolve them from the index stages.

While a path is unmerged, git's index holds its base (stage 1), ours (2) and theirs (3) as
pointers. :func:`file_conflicts` re-plans the merge from them (with the settings the driver
recorded, if its report matches); :func:`resolve` adds a choice for the conflicting tensors that
match a glob and, once nothing conflicts, writes the merged file and stages it.
"""

from __future__ import annotations

import fnmatch
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..core import pointer as ptr
from ..core.pointer import Pointer
from ..errors import UsageError
from ..git.repo import Repo, git
from .model import FILE, Conflict, MergePlan, MergeSettings
from .plan import plan_merge
from .report import read_report, remove_report, side_ids, write_report
from .settings import load_settings
from .strategies import parse_spec
from .write import write_merged


@dataclass
class FileConflicts:
    """The conflicts left in one unmerged path."""

    path: str
    conflicts: list[Conflict]
    plan: MergePlan | None = None
    resolutions: list[list[str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def unmerged(repo: Repo, paths: list[str] | None = None) -> dict[str, dict[int, str]]:
    """Unmerged paths of the index → ``{stage: blob id}``."""
    out = git("ls-files", "-u", "-z", "--full-name", "--", *(paths or []), cwd=repo.worktree)
    stages: dict[str, dict[int, str]] = {}
    for rec in out.split("\0"):
        if not rec:
            continue
        info, _, path = rec.partition("\t")
        _mode, oid, stage = info.split(" ")
        stages.setdefault(path, {})[int(stage)] = oid
    return stages


def _pointers(repo: Repo, stages: dict[int, str]) -> tuple[Pointer | None, Pointer | None, Pointer | None, bool]:
    """(base, ours, theirs, every present side is a pointer)."""
    out: list[Pointer | None] = []
    ok = True
    for s in (1, 2, 3):
        if s not in stages:
            out.append(None)
            continue
        p = ptr.try_parse(repo.pygit[stages[s]].data)
        ok &= p is not None
        out.append(p)
    return out[0], out[1], out[2], ok


def _context(repo: Repo, path: str, base: Pointer | None, ours: Pointer, theirs: Pointer) -> tuple[MergeSettings, list[list[str]]]:
    """The settings the driver used (from its report) and the choices made so far."""
    report = read_report(repo, path, side_ids(base, ours, theirs))
    if report is not None:
        return MergeSettings.from_json(report.get("settings", {})), [list(r) for r in report.get("resolutions", [])]
    return load_settings(repo, path), []


def _other(side: str) -> str:
    return "theirs" if side == "ours" else "ours"


def file_conflicts(repo: Repo, paths: list[str] | None = None) -> list[FileConflicts]:
    """Every unmerged coral path with what still conflicts in it."""
    result = []
    for path, stages in sorted(unmerged(repo, paths).items()):
        base, ours, theirs, ok = _pointers(repo, stages)
        if not ok:
            continue  # not a coral file: git's own conflict
        if ours is None or theirs is None:
            gone = "ours" if ours is None else "theirs"
            result.append(FileConflicts(path, [Conflict(FILE, f"deleted in {gone}, modified in {_other(gone)}")]))
            continue
        settings, resolutions = _context(repo, path, base, ours, theirs)
        plan = plan_merge(path, base, ours, theirs, repo.store, settings, tuple((g, s) for g, s in resolutions))
        result.append(FileConflicts(path, plan.conflicts, plan, resolutions, plan.counts()))
    return result


@dataclass
class Resolved:
    """What :func:`resolve` did."""

    path: str
    staged: bool
    remaining: list[Conflict]
    counts: dict[str, int]


def resolve(repo: Repo, path: str, spec: str, globs: list[str] | None = None) -> Resolved:
    """Resolve the conflicts of ``path`` whose names match ``globs`` (all when None) with ``spec``.

    Choices accumulate across calls; when no conflict is left the merged file is written to the
    work tree and staged with ``git add``.
    """
    if repo.worktree is None:
        raise UsageError("resolve needs a work tree")
    path = repo_path(repo, path)
    strategy = parse_spec(spec)  # reject a bad strategy before touching anything
    stages = unmerged(repo, [path]).get(path)
    if not stages:
        raise UsageError(f"{path} has no unresolved merge conflict")
    base, ours, theirs, ok = _pointers(repo, stages)
    if not ok:
        raise UsageError(f"{path} is not a coral model in every version; use 'git checkout --ours|--theirs -- {path}'")
    if ours is None or theirs is None:
        if strategy.pick is None:
            raise UsageError(f"{path} was deleted on one side: only --ours or --theirs can resolve it")
        keep = ours if strategy.pick == "ours" else theirs
        if keep is None:
            git("rm", "-q", "--", path, cwd=repo.worktree)
        else:
            write_worktree(repo, path, lambda f: _smudge(repo, keep, f, path))
            git("add", "--", path, cwd=repo.worktree)
        remove_report(repo, path)
        return Resolved(path, True, [], {})
    settings, resolutions = _context(repo, path, base, ours, theirs)
    before = plan_merge(path, base, ours, theirs, repo.store, settings, tuple((g, s) for g, s in resolutions))
    globs = globs or ["*"]
    if not any(fnmatch.fnmatchcase(c.name, g) for c in before.conflicts for g in globs):
        names = ", ".join(c.name or "(whole file)" for c in before.conflicts[:5]) or "none"
        raise UsageError(f"no conflict of {path} matches {' '.join(globs)} (conflicting: {names})")
    resolutions = resolutions + [[g, spec] for g in globs]
    plan = plan_merge(path, base, ours, theirs, repo.store, settings, tuple((g, s) for g, s in resolutions))
    if not plan.clean:
        write_report(repo, plan, settings, resolutions)
        return Resolved(path, False, plan.conflicts, plan.counts())
    write_worktree(repo, path, lambda f: write_merged(plan, repo.store, f, repo.chunk_bytes))
    git("add", "--", path, cwd=repo.worktree)
    remove_report(repo, path)
    return Resolved(path, True, [], plan.counts())


def repo_path(repo: Repo, path: str) -> str:
    """A path given on the command line → its path relative to the top of the work tree."""
    assert repo.worktree is not None
    full = Path(os.path.abspath(path))
    top = Path(os.path.abspath(repo.worktree))
    try:
        return full.relative_to(top).as_posix()
    except ValueError:
        try:
            return full.resolve().relative_to(top.resolve()).as_posix()
        except ValueError:
            raise UsageError(f"{path} is outside the repository") from None


def _smudge(repo: Repo, p: Pointer, f: BinaryIO, path: str) -> None:
    from ..filter.smudge import smudge

    smudge(p, repo.store, f.write, path=path, workers=repo.workers)


def write_worktree(repo: Repo, path: str, fill: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` in the work tree atomically (temp file in the same directory, then rename)."""
    assert repo.worktree is not None
    target = repo.worktree / path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.coral-")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
