"""What coral tells a person, in one place: log lines on stderr, progress bars, human sizes, colour, numbers.

Library code never prints to stdout (a filter's stdout belongs to git); these helpers write to stderr
or return text. At the bottom of the package with ``core``, ``dtypes`` and ``errors``: imports nothing
from coral_git; rich is imported only when a bar is shown.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def log(msg: str) -> None:
    """One ``coral: …`` line on stderr (drivers and filters: git shows it to the user)."""
    sys.stderr.write(f"coral: {msg}\n")
    sys.stderr.flush()


def progress(*columns, enabled: bool = True):
    """A transient rich progress bar on stderr; silent when stderr is not a terminal or ``enabled`` is false."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    return Progress(*columns, console=console, transient=True, disable=not (enabled and console.is_terminal))


def transfer_bar(what: str, enabled: bool = True):
    """The bar of an object transfer: ``coral: WHAT ━━━ n/m objects, x MB, time left`` (task field ``mb``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    return progress(
        TextColumn(f"coral: {what}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("objects, {task.fields[mb]:.1f} MB"),
        TimeRemainingColumn(),
        enabled=enabled,
    )


@contextmanager
def busy(what: str) -> Iterator[None]:
    """A transient ``⠋ coral: WHAT 0:00:07`` spinner on stderr while a long step runs (decoding a big
    model for diff/show/log); nothing when stderr is not a terminal."""
    from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

    with progress(SpinnerColumn(), TextColumn(f"coral: {what}"), TimeElapsedColumn()) as bar:
        bar.add_task("", total=None)
        yield


class ByteMeter:
    """A transient ``coral: adding PATH  1.2/… GB  540 MB/s`` line while a large file streams through
    the filter (git shows nothing during a long clean). Only on a terminal, and only once ``after``
    bytes have passed (``CORAL_PROGRESS_AFTER``, default 64 MiB), so small files stay silent."""

    def __init__(self, what: str, after: int | None = None) -> None:
        self.what = what
        self.after = after if after is not None else int(os.environ.get("CORAL_PROGRESS_AFTER", 64 << 20))
        self.n = 0
        self._bar = None
        self._task = None
        self._off = not sys.stderr.isatty()

    def add(self, k: int) -> None:
        self.n += k
        if self._off:
            return
        if self._bar is None:
            if self.n < self.after:
                return
            from rich.progress import DownloadColumn, TextColumn, TransferSpeedColumn

            self._bar = progress(TextColumn(f"coral: {self.what}"), DownloadColumn(), TransferSpeedColumn())
            self._bar.start()
            self._task = self._bar.add_task("", total=None)
        self._bar.update(self._task, completed=self.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    x = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(x) < 1024 or unit == "TiB":
            return f"{x:.0f} {unit}" if unit == "B" else f"{x:.1f} {unit}"
        x /= 1024
    raise AssertionError("unreachable")


def paint(text: str, code: str, on: bool) -> str:
    """``text`` in ANSI colour ``code`` when ``on``."""
    return f"\x1b[{code}m{text}\x1b[0m" if on and code else text


def fmt_num(x: float | None, spec: str = ".3g") -> str:
    """A statistic for a table: ``-`` when absent, ``nan`` when undefined."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    return format(x, spec)


def fmt_pct(x: float | None) -> str:
    """A fraction as a percentage for a table (``<0.1%`` rather than a misleading ``0.0%``)."""
    if x is None:
        return "-"
    if 0 < x < 0.001:
        return "<0.1%"
    return f"{100 * x:.1f}%"
