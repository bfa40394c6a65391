"""What a three-way merge decides: settings, decisions, conflicts, the plan, and the container interface.

Plain data and one abstract class; :mod:`.plan` fills a :class:`MergePlan`, :mod:`.containers`
implement :class:`Container` per file format, :mod:`.write` turns a clean plan into a file.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar

from ..core.pointer import Pointer, TensorEntry
from ..store.chunkstore import ChunkStore
from .strategies import Strategy, parse_spec

FILE = ""  # the name a whole-file conflict goes by
METADATA = "__metadata__"



# ---------------------------------------------------------------------------------------------
# settings
# ---------------------------------------------------------------------------------------------


@dataclass
class MergeSettings:
    """Which strategy decides each conflicting tensor.

    ``rules`` are ``(glob, spec)`` pairs tried in order (first match wins) before the file's
    ``strategy``; ``params`` hold the defaults ``alpha``, ``lambda`` and ``density``.
    """

    strategy: str = "conflict"
    rules: tuple[tuple[str, str], ...] = ()
    params: dict[str, float] = field(default_factory=dict)
    _cache: dict[str, Strategy] = field(default_factory=dict, repr=False, compare=False)

    def strategy_for(self, name: str) -> Strategy:
        for glob, spec in self.rules:
            if fnmatch.fnmatchcase(name, glob):
                return self._parse(spec)
        return self._parse(self.strategy)

    def strategy_for_spec(self, spec: str) -> Strategy:
        return self._parse(spec)

    def _parse(self, spec: str) -> Strategy:
        s = self._cache.get(spec)
        if s is None:
            s = self._cache[spec] = parse_spec(spec, self.params)
        return s

    def check(self) -> None:
        """Raise UsageError now for any unknown strategy or bad parameter."""
        self._parse(self.strategy)
        for _, spec in self.rules:
            self._parse(spec)

    def to_json(self) -> dict:
        return {"strategy": self.strategy, "rules": [list(r) for r in self.rules], "params": self.params}

    @classmethod
    def from_json(cls, d: dict) -> MergeSettings:
        return cls(str(d.get("strategy", "conflict")), tuple((str(g), str(s)) for g, s in d.get("rules", [])), dict(d.get("params", {})))


# ---------------------------------------------------------------------------------------------
# the plan
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """Something both sides changed that the strategy in force does not decide."""

    name: str  # tensor name, METADATA, or FILE for the whole file
    reason: str


@dataclass(frozen=True)
class Decision:
    """What the merged file holds for one tensor: a stored entry, or a combination of the three."""

    name: str
    take: TensorEntry | None  # the chosen entry (None for a deletion or a combination)
    source: str  # "ours" | "theirs" | "both" | "deleted" | strategy name
    strategy: Strategy | None = None
    base: TensorEntry | None = None
    ours: TensorEntry | None = None
    theirs: TensorEntry | None = None

    @property
    def present(self) -> bool:
        return self.take is not None or self.strategy is not None

    @property
    def dtype(self) -> str:
        e = self.take or self.ours
        assert e is not None
        return e.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        e = self.take or self.ours
        assert e is not None
        return e.shape


@dataclass
class MergePlan:
    """Every decision of a three-way merge of one file, before any tensor data is read."""

    path: str
    base: Pointer | None
    ours: Pointer
    theirs: Pointer
    whole: str | None = None  # "ours" | "theirs" when the result is one side's file as is
    decisions: list[Decision] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    extra: object = None  # the container's merged non-tensor part
    container: Container | None = None

    @property
    def clean(self) -> bool:
        return not self.conflicts

    def counts(self) -> dict[str, int]:
        """How many tensors came from where: ``{"ours": n, "theirs": m, "average": k, …}``."""
        out: dict[str, int] = {}
        for d in self.decisions:
            out[d.source] = out.get(d.source, 0) + 1
        return out


class Container:
    """Format-specific merge: which items are tensors, the non-tensor part, and the writer."""

    format: ClassVar[str]

    def load(self, store: ChunkStore, path: str, base: Pointer | None, ours: Pointer, theirs: Pointer) -> object:
        """Read what the container needs from the three skeletons."""
        raise NotImplementedError

    def items(self, p: Pointer) -> dict[str, TensorEntry]:
        return p.by_name()

    def merge_extra(self, sides: object, settings: MergeSettings) -> tuple[object, list[Conflict]]:
        """Merge the non-tensor part; return it and its conflicts."""
        raise NotImplementedError

    def check(self, plan: MergePlan, sides: object, settings: MergeSettings, resolutions: tuple[tuple[str, str], ...]) -> None:
        """Turn decisions the writer cannot honour into conflicts (appended to ``plan.conflicts``)."""

    def write(self, plan: MergePlan, store: ChunkStore, out: BinaryIO, block_bytes: int) -> None:
        raise NotImplementedError
