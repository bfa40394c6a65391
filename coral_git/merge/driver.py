"""git's merge driver for model files: ``merge.coral.driver = git-coral merge-driver %O %A %B %P %L``.

git hands the driver three temp files holding the repository form of the file (pointers): base
(%O, empty when there is no common ancestor), ours (%A) and theirs (%B). The driver writes the
merged pointer to %A and exits 0, or leaves %A as ours (a loadable model, never conflict
markers), writes a conflict report under ``$GIT_DIR/coral/merge/`` and exits 1.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..core import pointer as ptr
from ..core.pointer import Pointer
from ..errors import CoralError
from ..filter.clean import clean
from ..git.repo import Repo, find_repo
from ..ui import log
from .plan import plan_merge
from .report import remove_report, write_report
from .settings import load_settings
from .write import merged_pointer

# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


GIT_TEMP_PREFIX = ".merge_file_"  # git's ll-merge names the %O/%A/%B temp files so


def as_pointer(repo: Repo, data: bytes, path: str) -> Pointer:
    """The pointer ``data`` is, or the pointer of ``data`` stored now (a file committed raw)."""
    p = ptr.try_parse(data)
    if p is not None:
        return p
    return clean(data, repo.store, chunk_bytes=repo.chunk_bytes, workers=repo.workers).pointer


def describe(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def run(base_file: str, ours_file: str, theirs_file: str, path: str) -> int:
    """Merge one file for git; 0 when clean (merged pointer in ``ours_file``), 1 on conflict."""
    hint = "git runs this driver during a merge; to merge model files by hand use 'git coral resolve'"
    for what, f in (("%O", base_file), ("%A", ours_file), ("%B", theirs_file)):
        if not Path(f).is_file():
            log(f"merge-driver: the {what} file {f!r} does not exist; {hint}")
            return 2
    try:
        repo = find_repo()
        base_data = Path(base_file).read_bytes()
        ours_data = Path(ours_file).read_bytes()
        if ptr.try_parse(ours_data) is None and not Path(ours_file).name.startswith(GIT_TEMP_PREFIX):
            # git hands the driver temp copies in repository form; a real model file here means the
            # driver was run by hand, and writing a pointer over it would lose the model
            log(f"merge-driver: {ours_file!r} is a model file, not a temp file from git; refusing to overwrite it ({hint})")
            return 2
        theirs_data = Path(theirs_file).read_bytes()
        base = as_pointer(repo, base_data, path) if base_data else None
        ours = as_pointer(repo, ours_data, path)
        theirs = as_pointer(repo, theirs_data, path)
        settings = load_settings(repo, path)
        plan = plan_merge(path, base, ours, theirs, repo.store, settings)
        if plan.clean:
            merged = merged_pointer(plan, repo)
            if merged.encode() != ours_data:
                Path(ours_file).write_bytes(merged.encode())
            remove_report(repo, path)
            if plan.whole is None:
                log(f"{path}: merged tensor by tensor ({describe(plan.counts())})")
            return 0
        write_report(repo, plan, settings)
        n = len(plan.conflicts)
        what = "the file" if plan.conflicts[0].name == "" else f"{n} tensor{'s' if n != 1 else ''}"
        log(f"CONFLICT (model) in {path}: {what} changed on both sides; the work tree keeps ours. "
            f"See 'git coral conflicts', then 'git coral resolve {shlex.quote(path)} --ours|--theirs|--strategy S'")
        return 1
    except CoralError as exc:
        log(f"{path}: merge failed: {exc}; the work tree keeps ours")
        return 1
    except Exception as exc:  # never leave git with a half-written result or a traceback
        log(f"{path}: merge failed: internal error ({type(exc).__name__}: {exc}); the work tree keeps ours")
        if os.environ.get("CORAL_DEBUG"):
            raise
        return 1
