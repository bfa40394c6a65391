"""Path globs matched like .gitattributes patterns (used by migrate, fetch and the smudge filter)."""

from __future__ import annotations

from fnmatch import fnmatchcase


def matches(path: str, pattern: str) -> bool:
    """A pattern without a slash matches the file name at any depth; with one, the path from the root
    (a trailing slash means everything below)."""
    pattern = pattern.strip()
    if pattern.endswith("/"):  # a directory: everything below it (at any depth if it has no inner slash)
        d = pattern.strip("/")
        return fnmatchcase(path, d + "/*") or ("/" not in d and fnmatchcase(path, "*/" + d + "/*"))
    if "/" not in pattern:
        return fnmatchcase(path.rsplit("/", 1)[-1], pattern) or fnmatchcase(path, pattern)
    return fnmatchcase(path, pattern.lstrip("/"))


def selected(path: str, include: list[str], exclude: list[str]) -> bool:
    """In ``include`` (everything when empty) and not in ``exclude``."""
    if include and not any(matches(path, p) for p in include):
        return False
    return not any(matches(path, p) for p in exclude)


def split_list(value: str | None) -> list[str]:
    """``'a/*, *.bin'`` -> ``['a/*', '*.bin']`` (git-lfs's comma-separated lists)."""
    return [p.strip() for p in (value or "").split(",") if p.strip()]
