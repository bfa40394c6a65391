"""git's external diff command (``diff.coral.command``) and the text form of a :class:`FileDiff`.

git runs ``git-coral diff-driver path old-file old-hex old-mode new-file new-hex new-mode`` (plus
``new-path`` and a message for renames). The files are in working-tree form (git smudged them),
but the hex ids name the blobs, so the pointers are read from the repository. A side whose hex is
all zeros is the working tree: that file is hashed in memory (nothing is written to the store).
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass

from ..core import pointer as ptr
from ..core.mapped import mapped_array
from ..errors import CoralError, UsageError
from ..git.repo import Repo, find_repo
from ..ui import fmt_num, fmt_pct, human_bytes, paint
from .tensordiff import (
    ADDED,
    MODIFIED,
    REMOVED,
    RENAMED,
    RESHAPED,
    RETYPED,
    FileDiff,
    Side,
    Source,
    TensorDiff,
    diff_files,
    file_source,
    hash_pointer,
)

# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


@dataclass
class Style:
    """How a diff is printed."""

    color: bool = False
    compact: bool = False
    order: str = "change"  # or "name"


def _setting(repo: Repo | None, env: str, key: str) -> str | None:
    value = os.environ.get(env)
    if value is None and repo is not None:
        value = repo.config.get(key.lower())
    return value


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def style_from_env(repo: Repo | None, stream: object = None) -> Style:
    """Sort, compact and colour settings: ``CORAL_DIFF_SORT``/``coral.diffSort`` (change|name),
    ``CORAL_DIFF_STAT``/``coral.diffStat`` (compact), ``CORAL_DIFF_COLOR``/``coral.diffColor``
    (auto|always|never; auto means only on a terminal, including git's pager)."""
    order = (_setting(repo, "CORAL_DIFF_SORT", "coral.diffSort") or "change").strip().lower()
    if order not in ("change", "name"):
        raise UsageError(f"coral.diffSort = {order!r}: use 'change' or 'name'")
    compact = _truthy(_setting(repo, "CORAL_DIFF_STAT", "coral.diffStat"))
    return Style(color=want_color(_setting(repo, "CORAL_DIFF_COLOR", "coral.diffColor"), stream), compact=compact, order=order)


def want_color(mode: str | None, stream: object = None) -> bool:
    """Colour only on a terminal (git's pager counts as one), unless forced; NO_COLOR turns it off."""
    mode = (mode or "auto").strip().lower()
    if mode in ("always", "true"):
        return True
    if mode in ("never", "false") or "NO_COLOR" in os.environ:
        return False
    stream = stream or sys.stdout
    if os.environ.get("GIT_PAGER_IN_USE", "").lower() in ("1", "true"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------

STATUS_COLORS = {ADDED: "32", REMOVED: "31", MODIFIED: "33", RENAMED: "36", RESHAPED: "35", RETYPED: "35"}
_BOLD = "1"


def _shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else "[" + ",".join(map(str, s)) + "]"


def _arrow(a: str, b: str) -> str:
    return a if a == b else f"{a}→{b}"


def describe(t: TensorDiff) -> tuple[str, str]:
    """(name column, shape/dtype column) of a record."""
    name = f"{t.old_name} → {t.name}" if t.status == RENAMED else t.name
    if t.status == ADDED:
        return name, f"{_shape(t.new_shape)} {t.new_dtype}"
    if t.status == REMOVED:
        return name, f"{_shape(t.old_shape)} {t.old_dtype}"
    return name, f"{_arrow(_shape(t.old_shape), _shape(t.new_shape))} {_arrow(t.old_dtype or '-', t.new_dtype or '-')}"


def summary(fd: FileDiff) -> str:
    """One line: tensors and parameters changed, bytes, unchanged count."""
    if fd.bytes is not None:
        b = fd.bytes
        parts = [f"{human_bytes(b.old_size)} → {human_bytes(b.new_size)}",
                 f"{b.chunks_changed} of {b.chunks_total} chunks changed ({human_bytes(b.bytes_changed)} new)"]  # fmt: skip
        if b.differing_bytes is not None:
            parts.append(f"{b.differing_bytes:,} bytes differ")
        return "opaque file (not a tensor format coral reads): " + ", ".join(parts)
    counts: dict[str, int] = {}
    for t in fd.tensors:
        counts[t.status] = counts.get(t.status, 0) + 1
    kinds = ", ".join(f"{n} {s}" for s, n in counts.items())
    changed = len(fd.tensors)
    line = f"{changed} of {fd.tensors_total} tensors changed"
    if kinds:
        line += f" ({kinds})"
    pct = f" ({100 * fd.params_changed / fd.params_total:.2f}%)" if fd.params_total else ""
    line += f", {fd.params_changed:,} of {fd.params_total:,} parameters{pct}"
    line += f", {human_bytes(fd.bytes_changed)} of {human_bytes(fd.new_size)} in new chunks"
    line += f"; {fd.unchanged} unchanged"
    if fd.metadata_changed:
        line += "; metadata changed"
    return line


def render(fd: FileDiff, style: Style, old_path: str | None = None) -> str:
    """The table ``git diff`` shows for one file."""
    on = style.color
    a, b = old_path or fd.path, fd.path
    fmt = _arrow(fd.old_format or "-", fd.new_format or "-")
    lines = [paint(f"diff --coral a/{a} b/{b} ({fmt})", _BOLD, on)]
    if fd.old_format is None:
        lines.append(paint("new file", "32", on))
    elif fd.new_format is None:
        lines.append(paint("deleted file", "31", on))
    if fd.bytes is None and fd.tensors:
        rows = [describe(t) for t in fd.tensors]
        wn = min(max(len(r[0]) for r in rows), 72)
        ws = max(len(r[1]) for r in rows)
        if style.compact:
            for t, (name, _) in zip(fd.tensors, rows, strict=True):
                frac = 1.0 if t.status in (ADDED, REMOVED, RETYPED, RESHAPED) and t.frac_changed is None else (t.frac_changed or 0.0)
                bar = ("-" if t.status == REMOVED else "+") * max(1 if frac else 0, round(20 * frac))
                rel = f"rel {fmt_num(t.rel_change, '.2e')}" if t.rel_change is not None else t.status
                lines.append(f" {name:<{wn}} | {paint(f'{rel:<12}', STATUS_COLORS.get(t.status, ''), on)} {paint(bar, STATUS_COLORS.get(t.status, ''), on)}")
        else:
            head = f"  {'status':<9} {'tensor':<{wn}}  {'shape dtype':<{ws}}  {'‖Δ‖':>9} {'‖Δ‖/‖W‖':>9} {'max|Δ|':>9} {'changed':>8} {'cosine':>9}"
            lines.append(paint(head, _BOLD, on) if on else head)
            for t, (name, sd) in zip(fd.tensors, rows, strict=True):
                status = paint(f"{t.status:<9}", STATUS_COLORS.get(t.status, ""), on)
                cos = "-" if t.cosine is None else f"{t.cosine:.6f}"
                lines.append(
                    f"  {status} {name:<{wn}}  {sd:<{ws}}  {fmt_num(t.delta_norm):>9} {fmt_num(t.rel_change, '.2e'):>9} "
                    f"{fmt_num(t.max_abs):>9} {fmt_pct(t.frac_changed):>8} {cos:>9}"
                )
    lines.append("  " + summary(fd))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Reading the two sides git passes
# ---------------------------------------------------------------------------------------------


def _is_null(hexid: str) -> bool:
    return not hexid.strip("0")


def blob_pointer(repo: Repo, hexid: str) -> ptr.Pointer | None:
    """The pointer stored in blob ``hexid``, or None if the blob is not a pointer."""
    try:
        obj = repo.pygit[hexid]
    except (KeyError, ValueError):
        return None
    if obj.size > ptr.MAX_POINTER:
        return None
    return ptr.try_parse(obj.data)


def open_side(repo: Repo, stack: ExitStack, file: str, hexid: str) -> Side:
    """One side of an external-diff call: pointer from the blob when possible, else hash the file."""
    if file == "/dev/null" or hexid == ".":
        return Side(None, None)
    p = None if _is_null(hexid) else blob_pointer(repo, hexid)
    if p is not None:
        src: Source = repo.store
        if os.path.exists(file):
            buf = stack.enter_context(mapped_array(file))
            if buf.size == p.size:
                src = file_source(p, buf, repo.store)  # git smudged it already: read from it, verified
        return Side(p, src)
    buf = stack.enter_context(mapped_array(file))
    p2, mem = hash_pointer(memoryview(buf), repo.chunk_bytes, workers=repo.workers)
    mem.fallback = repo.store
    return Side(p2, mem)


def run(argv: list[str], out: object = None) -> int:
    """Entry point of ``git-coral diff-driver``; prints the table on stdout."""
    out = out or sys.stdout
    if len(argv) not in (7, 9):
        raise UsageError("diff-driver expects git's 7 (or 9) external diff arguments: path old-file old-hex old-mode new-file new-hex new-mode")
    path, old_file, old_hex, _old_mode, new_file, new_hex, _new_mode = argv[:7]
    new_path = argv[7] if len(argv) == 9 else path
    repo = find_repo()
    style = style_from_env(repo, out)
    with ExitStack() as stack:
        old = open_side(repo, stack, old_file, old_hex)
        new = open_side(repo, stack, new_file, new_hex)
        try:
            fd = diff_files(new_path, old, new, order=style.order, workers=repo.workers)
        except CoralError as exc:
            raise CoralError(f"{new_path}: {exc}") from None
        text = render(fd, style, old_path=path)
        del old, new
    out.write(text)  # type: ignore[attr-defined]
    out.flush()  # type: ignore[attr-defined]
    return 0
