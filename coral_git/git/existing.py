"""What a repository already holds when coral arrives: git-lfs patterns, pointer files left unsmudged."""

from __future__ import annotations

from pathlib import Path

from ..core import pointer as ptr
from .repo import git


def _attr_files(worktree: Path) -> list[str]:
    """Every committed or present .gitattributes, root first."""
    out = git("ls-files", "-z", "--", ".gitattributes", "*/.gitattributes", cwd=worktree, check=False)
    files = [f for f in out.split("\0") if f]
    if ".gitattributes" not in files and (worktree / ".gitattributes").exists():
        files.insert(0, ".gitattributes")
    return sorted(set(files), key=lambda f: (f.count("/"), f))


def tracked_patterns(worktree: Path) -> list[dict[str, str]]:
    """``{pattern, filter, file}`` for every line of every .gitattributes that sets a filter."""
    rows = []
    for name in _attr_files(worktree):
        try:
            text = (worktree / name).read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if not parts or line.lstrip().startswith("#"):
                continue
            for a in parts[1:]:
                if a.startswith("filter="):
                    rows.append({"pattern": parts[0], "filter": a.split("=", 1)[1], "file": name})
    return rows


def lfs_patterns(worktree: Path) -> list[str]:
    return [r["pattern"] for r in tracked_patterns(worktree) if r["filter"] == "lfs"]


def pointer_files(worktree: Path) -> list[str]:
    """Tracked files of the work tree whose content is a coral pointer (a clone before 'git coral pull')."""
    out = git("ls-files", "-z", cwd=worktree, check=False)
    left = []
    for path in out.split("\0"):
        if not path:
            continue
        try:
            with open(worktree / path, "rb") as f:
                if f.read(len(ptr.MAGIC_BYTES)) == ptr.MAGIC_BYTES:
                    left.append(path)
        except OSError:
            continue
    return left
