"""Three-way merge of model files, tensor by tensor.

:func:`plan_merge` compares three pointers (base, ours, theirs) and decides every tensor without
reading tensor data: one-sided changes, identical changes, additions and deletions merge by
themselves; tensors changed differently on both sides go to the strategy in force
(:mod:`coral_git.merge.strategies`) or become conflicts. The non-tensor part of the file
(safetensors ``__metadata__``, a torch checkpoint's pickle) is merged by the container's
:class:`Container` handler. :func:`write_merged` then writes the merged file, a real file of the
same format, streaming tensors chunk by chunk; :func:`merged_pointer` cleans it into the store.
"""

from __future__ import annotations

import fnmatch

import xxhash

from ..core.pointer import Pointer, TensorEntry
from ..store.chunkstore import ChunkStore
from .containers import container_for
from .model import FILE, Conflict, Decision, MergePlan, MergeSettings
from .strategies import Strategy, is_float


def _content_id(store: ChunkStore, e: TensorEntry, context: str) -> str:
    h = xxhash.xxh3_128()
    for c in e.chunks:
        h.update(store.get(c, context))
    return h.hexdigest()


class _Same:
    """Tensor equality: by chunk ids, or by content when the pointers used different chunk sizes."""

    def __init__(self, store: ChunkStore, path: str, *pointers: Pointer | None) -> None:
        self.store = store
        self.path = path
        self.mixed = len({p.chunk_bytes for p in pointers if p is not None}) > 1
        self._ids: dict[tuple[str, ...], str] = {}

    def __call__(self, a: TensorEntry | None, b: TensorEntry | None) -> bool:
        if a is None or b is None:
            return a is b
        if (a.dtype, a.shape, a.nbytes) != (b.dtype, b.shape, b.nbytes):
            return False
        if a.chunks == b.chunks:
            return True
        return self.mixed and self._id(a) == self._id(b)

    def _id(self, e: TensorEntry) -> str:
        v = self._ids.get(e.chunks)
        if v is None:
            v = self._ids[e.chunks] = _content_id(self.store, e, f"{self.path}: tensor {e.name}")
        return v


def _describe(e: TensorEntry) -> str:
    return f"{e.dtype}[{','.join(map(str, e.shape))}]"


def _kinds(o: TensorEntry, t: TensorEntry) -> str:
    """What differs between the two sides beyond their values, e.g. ``: dtype F16 vs BF16``."""
    out = []
    if o.dtype != t.dtype:
        out.append(f"dtype {o.dtype} (ours) vs {t.dtype} (theirs)")
    if o.shape != t.shape:
        out.append(f"shape {_describe(o)} (ours) vs {_describe(t)} (theirs)")
    return ": " + ", ".join(out) if out else ""


def _applicable(b: TensorEntry | None, o: TensorEntry, t: TensorEntry) -> str:
    """Which strategies can decide this tensor, as a hint for ``git coral resolve``."""
    if (o.dtype, o.shape) != (t.dtype, t.shape) or not is_float(o.dtype):
        return "only --ours or --theirs apply"
    if b is None or (b.dtype, b.shape) != (o.dtype, o.shape):
        return "--ours, --theirs, --strategy average or weighted:α apply (no usable base for task-arithmetic/ties)"
    return "--ours, --theirs or --strategy average, weighted:α, task-arithmetic:λ, ties:density apply"


def decide(name: str, b: TensorEntry | None, o: TensorEntry | None, t: TensorEntry | None, same: _Same, strategy: Strategy) -> Decision | Conflict:
    """The three-way decision for one tensor (``strategy`` only matters when both sides changed it)."""
    if same(o, t):
        return Decision(name, o, "both" if o is not None else "deleted")
    if same(b, o):
        return Decision(name, t, "theirs" if t is not None else "deleted")
    if same(b, t):
        return Decision(name, o, "ours" if o is not None else "deleted")
    if o is None or t is None:
        side = "ours" if o is None else "theirs"
        if strategy.pick:
            picked = o if strategy.pick == "ours" else t
            return Decision(name, picked, strategy.pick if picked is not None else "deleted")
        return Conflict(name, f"deleted in {side}, modified in {'theirs' if o is None else 'ours'}")
    if strategy.pick:
        return Decision(name, o if strategy.pick == "ours" else t, strategy.pick)
    added = "added on both sides with different values" if b is None else "changed on both sides"
    if not strategy.numeric:
        return Conflict(name, f"{added}{_kinds(o, t)} (strategy: {strategy.spec}); {_applicable(b, o, t)}")
    if (o.dtype, o.shape) != (t.dtype, t.shape):
        return Conflict(name, f"{added}{_kinds(o, t)}: {strategy.name} cannot combine them; {_applicable(b, o, t)}")
    if not is_float(o.dtype):
        return Conflict(name, f"{added}: {o.dtype} tensors are never combined numerically; {_applicable(b, o, t)}")
    if strategy.needs_base and (b is None or (b.dtype, b.shape) != (o.dtype, o.shape)):
        why = "there is no common base" if b is None else f"the base is {_describe(b)}"
        return Conflict(name, f"{added}: {strategy.name} needs the base tensor but {why}")
    return Decision(name, None, strategy.name, strategy, b, o, t)


def plan_merge(
    path: str,
    base: Pointer | None,
    ours: Pointer,
    theirs: Pointer,
    store: ChunkStore,
    settings: MergeSettings,
    resolutions: tuple[tuple[str, str], ...] = (),
) -> MergePlan:
    """Decide every tensor of a three-way merge (reads only skeletons, never tensor data).

    ``resolutions`` are ``(glob, spec)`` choices made by ``git coral resolve``, in the order they
    were made. They apply only to what ``settings`` leaves conflicting: the first choice whose
    glob matches and that decides the conflict wins.
    """
    plan = MergePlan(path, base, ours, theirs)
    parser = MergeSettings(params=settings.params)

    def matching(name: str) -> list[Strategy]:
        return [parser.strategy_for_spec(spec) for glob, spec in resolutions if fnmatch.fnmatchcase(name, glob)]

    # whole-file fast paths: one side unchanged, or both the same
    if ours.file_id == theirs.file_id or (base is not None and base.file_id == theirs.file_id):
        plan.whole = "ours"
        return plan
    if base is not None and base.file_id == ours.file_id:
        plan.whole = "theirs"
        return plan
    container = container_for(ours.format)
    if container is None or theirs.format != ours.format:
        why = f"{ours.format} files are merged as a whole"
        if theirs.format != ours.format:
            why = f"the file is {ours.format} in ours and {theirs.format} in theirs"
        picks = [s.pick for s in [settings.strategy_for(FILE), *matching(FILE)] if s.pick]
        if picks:
            plan.whole = picks[0]
        else:
            plan.conflicts.append(Conflict(FILE, why))
        return plan
    if base is not None and base.format != ours.format:
        base = None  # a base of another format says nothing about tensors: merge as add/add
    plan.container = container
    sides = container.load(store, path, base, ours, theirs)
    extra, extra_conflicts = container.merge_extra(sides, settings)
    names = {c.name for c in extra_conflicts}
    for glob, spec in resolutions if extra_conflicts else ():
        if all(fnmatch.fnmatchcase(n, glob) for n in names):
            extra2, left = container.merge_extra(sides, MergeSettings(spec, params=settings.params))
            if not left:
                extra, extra_conflicts = extra2, left
                break
    plan.extra = extra
    plan.conflicts.extend(extra_conflicts)
    same = _Same(store, path, base, ours, theirs)
    b_items = container.items(base) if base is not None else {}
    o_items, t_items = container.items(ours), container.items(theirs)
    names_in_order = list(o_items) + [n for n in t_items if n not in o_items]
    names_in_order += [n for n in b_items if n not in o_items and n not in t_items]
    for name in names_in_order:
        b, o, t = b_items.get(name), o_items.get(name), t_items.get(name)
        d = decide(name, b, o, t, same, settings.strategy_for(name))
        if isinstance(d, Conflict):
            for alt in matching(name):
                d2 = decide(name, b, o, t, same, alt)
                d = d2  # a resolution that fails says why it failed, not why the first try did
                if not isinstance(d2, Conflict):
                    break
        if isinstance(d, Conflict):
            plan.conflicts.append(d)
        elif d.present:
            plan.decisions.append(d)
    if plan.clean:
        container.check(plan, sides, settings, resolutions)
    return plan
