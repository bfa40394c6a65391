"""The ``delay`` capability of git's filter protocol: smudge many files concurrently during a checkout.

git offers ``can-delay=1`` with each smudge; we answer ``status=delayed`` at once and rebuild the
file (fetching its missing chunks, decoding its tensors) on a worker thread into a temp file under
``coral/tmp``. git then asks ``list_available_blobs``; we answer with the paths that are ready
(waiting until at least one is), and git asks for each of them again, with empty content, and gets
the file streamed from its temp file. So a checkout of many shard files downloads and decodes them
``coral.concurrentTransfers`` at a time (default 4) instead of one after another.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

DEFAULT_FILES = 4


class DelayedSmudges:
    """Smudges running in the background, by path."""

    def __init__(self, smudge: Callable[[bytes, str, Callable[[memoryview], None]], None], tmpdir: str, workers: int) -> None:
        self._smudge = smudge
        self._tmpdir = tmpdir
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="coral-delay")
        self._jobs: dict[str, Future] = {}
        self._reported: set[str] = set()
        self._pointers: dict[str, bytes] = {}
        self._cond = threading.Condition()

    def submit(self, path: str, pointer: bytes) -> None:
        os.makedirs(self._tmpdir, exist_ok=True)

        def run() -> Path:
            fd, name = tempfile.mkstemp(prefix="delayed-", dir=self._tmpdir)  # here: a cancelled job leaves none
            os.close(fd)
            try:
                with open(name, "wb") as f:
                    self._smudge(pointer, path, f.write)
                return Path(name)
            except BaseException:
                Path(name).unlink(missing_ok=True)
                raise
            finally:
                with self._cond:
                    self._cond.notify_all()

        self._jobs[path] = self._pool.submit(run)
        self._pointers[path] = pointer

    def pointer(self, path: str) -> bytes:
        return self._pointers[path]

    def __contains__(self, path: str) -> bool:
        return path in self._jobs

    def available(self) -> list[str]:
        """Paths finished and not yet listed; waits for at least one while any is pending."""
        with self._cond:
            while True:
                ready = [p for p, f in self._jobs.items() if f.done() and p not in self._reported]
                pending = any(not f.done() for f in self._jobs.values())
                if ready or not pending:
                    self._reported.update(ready)
                    return ready
                self._cond.wait(0.5)

    def take(self, path: str) -> Path:
        """The finished file of ``path`` (the job's exception, re-raised, if it failed)."""
        fut = self._jobs.pop(path)
        self._reported.discard(path)
        self._pointers.pop(path, None)
        return fut.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for fut in self._jobs.values():  # files git never collected (it stopped early)
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                fut.result().unlink(missing_ok=True)
