"""Which pointers ``git coral fetch`` downloads: REV's tree, recent branch tips, or all history; filtered
by --include/--exclude or, by default, coral.fetchInclude/fetchExclude."""

from __future__ import annotations

import time

from ..core.globs import selected
from ..filter.fetchpaths import fetch_paths
from ..git.pointers import history_pointers, tree_pointers
from ..git.repo import Repo, git


def recent_tips(repo: Repo, days: int) -> list[str]:
    cwd = repo.worktree or repo.git_dir
    out = git("for-each-ref", "--format=%(objectname) %(committerdate:unix)", "refs/heads", "refs/remotes", cwd=cwd)
    cutoff = time.time() - days * 86400
    tips = []
    for line in out.splitlines():
        oid, _, when = line.partition(" ")
        if when.isdigit() and int(when) >= cutoff and oid not in tips:
            tips.append(oid)
    return tips


def path_globs(repo: Repo, include: list[str] | None, exclude: list[str] | None) -> tuple[list[str], list[str]]:
    """The include/exclude globs in effect: the command line's, else coral.fetchInclude/fetchExclude.
    Like git-lfs, either option on the command line replaces both settings."""
    if include or exclude:
        return list(include or []), list(exclude or [])
    conf = fetch_paths(repo.worktree or repo.git_dir, repo.worktree)
    return conf.include, conf.exclude


def select_pointers(
    repo: Repo, rev: str, include: list[str] | None, exclude: list[str] | None, *, recent: bool = False, everything: bool = False
) -> tuple[int, list[str]]:
    """``(file versions, chunk ids)`` to fetch."""
    cwd = repo.worktree or repo.git_dir
    inc, exc = path_globs(repo, include, exclude)
    found = []
    if everything:
        found = list(history_pointers(cwd, ["--all"]))
    else:
        revs = [rev]
        if recent:
            revs += recent_tips(repo, repo.setting_int("coral.fetchRecentRefsDays", 7, 0, 100000))
        seen: set[str] = set()
        for r in revs:
            tree = git("rev-parse", f"{r}^{{tree}}", cwd=cwd)
            if tree not in seen:
                seen.add(tree)
                found.extend(tree_pointers(cwd, tree))
    ids: list[str] = []
    n = 0
    for path, p in found:
        if selected(path, inc, exc):
            n += 1
            ids.extend(sorted(p.chunk_ids()))
    return n, list(dict.fromkeys(ids))
