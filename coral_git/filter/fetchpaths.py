"""``coral.fetchInclude`` / ``coral.fetchExclude``: which model files smudge (and fetch) bring in.

Like git-lfs's ``lfs.fetchinclude/fetchexclude``: a path left out checks out as its pointer text, and
no chunk is downloaded for it. Read from git config first, then from the committed ``.coralconfig``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.globs import selected, split_list
from ..git.repo import git_value


def _get(key: str, cwd: Path | None, worktree: Path | None) -> str | None:
    value = git_value(["config", "--get", key], cwd)
    if value is not None:
        return value
    if worktree is not None and (worktree / ".coralconfig").is_file():
        return git_value(["config", "--file", str(worktree / ".coralconfig"), "--get", key], cwd)
    # during a clone's first checkout the file may not be written yet: read HEAD's copy
    return git_value(["config", "--blob", "HEAD:.coralconfig", "--get", key], cwd)


@dataclass(frozen=True)
class FetchPaths:
    include: list[str]
    exclude: list[str]

    def wants(self, path: str) -> bool:
        return selected(path, self.include, self.exclude)

    @property
    def everything(self) -> bool:
        return not self.include and not self.exclude


def fetch_paths(cwd: Path | None, worktree: Path | None) -> FetchPaths:
    return FetchPaths(split_list(_get("coral.fetchInclude", cwd, worktree)), split_list(_get("coral.fetchExclude", cwd, worktree)))
