"""Path globs for ``--include``/``--exclude``, matched like .gitattributes patterns."""

from __future__ import annotations

from ..core.globs import matches


class PathFilter:
    """``include`` globs minus ``exclude`` globs."""

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = list(include)
        self.exclude = list(exclude)

    def hit(self, path: str) -> str | None:
        """The include pattern that selects ``path``, or None when it is not selected."""
        if any(matches(path, p) for p in self.exclude):
            return None
        return next((p for p in self.include if matches(path, p)), None)

    def excluded(self, path: str) -> str | None:
        """The exclude pattern that removes ``path`` although an include pattern selects it."""
        if not any(matches(path, p) for p in self.include):
            return None
        return next((p for p in self.exclude if matches(path, p)), None)
