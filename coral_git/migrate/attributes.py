"""Rewriting the root ``.gitattributes`` of each commit: lfs lines ↔ coral lines for migrated patterns."""

from __future__ import annotations

from ..git.install import ATTRS as CORAL_ATTRS

LFS_ATTRS = "filter=lfs diff=lfs merge=lfs -text"


def _split(line: str) -> tuple[str, list[str]]:
    parts = line.split()
    return (parts[0], parts[1:]) if parts and not line.lstrip().startswith("#") else ("", [])


def to_coral(text: str, patterns: list[str], need: set[str], keep_lfs: set[str]) -> str:
    """lfs lines of ``patterns`` become coral lines in place; coral lines are added for the patterns in
    ``need`` that have none; ``keep_lfs`` patterns (excluded LFS files) get an lfs line after them."""
    out: list[str] = []
    have: set[str] = set()
    for line in text.splitlines():
        pat, attrs = _split(line)
        if pat in patterns and "filter=lfs" in attrs:
            line = f"{pat} {CORAL_ATTRS}"
            attrs = CORAL_ATTRS.split()
        if pat and "filter=coral" in attrs:
            have.add(pat)
        if pat in keep_lfs and "filter=lfs" in attrs:
            continue  # re-added after the coral lines, so that it wins
        out.append(line)
    out += [f"{p} {CORAL_ATTRS}" for p in patterns if p in need and p not in have]
    out += [f"{p} {LFS_ATTRS}" for p in sorted(keep_lfs)]
    return "\n".join(out) + "\n" if out else ""


def to_lfs(text: str, plain: bool, patterns: list[str] | None = None) -> str:
    """coral lines (of ``patterns``, or all) become lfs lines in place (or are dropped, for plain files)."""
    out: list[str] = []
    for line in text.splitlines():
        pat, attrs = _split(line)
        if pat and "filter=coral" in attrs and (patterns is None or pat in patterns):
            if plain:
                continue
            line = f"{pat} {LFS_ATTRS}"
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


def coral_patterns(text: str) -> list[str]:
    return [p for p, a in map(_split, text.splitlines()) if p and "filter=coral" in a]


def lfs_patterns(text: str) -> list[str]:
    return [p for p, a in map(_split, text.splitlines()) if p and "filter=lfs" in a]
