"""Conflict reports: what a conflicted merge of one file left under ``$GIT_DIR/coral/merge/`` for ``resolve``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import quote

from ..core.pointer import Pointer
from ..git.repo import Repo
from .model import MergePlan, MergeSettings

# ---------------------------------------------------------------------------------------------
# conflict reports
# ---------------------------------------------------------------------------------------------


def report_dir(repo: Repo) -> Path:
    return repo.git_dir / "coral" / "merge"


def report_path(repo: Repo, path: str) -> Path:
    return report_dir(repo) / (quote(path, safe="") + ".json")


def side_ids(base: Pointer | None, ours: Pointer | None, theirs: Pointer | None) -> list[str | None]:
    return [p.file_id if p is not None else None for p in (base, ours, theirs)]


def write_report(repo: Repo, plan: MergePlan, settings: MergeSettings, resolutions: list[list[str]] | None = None) -> Path:
    """Record a conflicted merge of one file (JSON) for ``git coral conflicts``/``resolve``."""
    from ..store.objects import write_atomic

    report = {
        "path": plan.path,
        "time": int(time.time()),
        "ids": side_ids(plan.base, plan.ours, plan.theirs),
        "settings": settings.to_json(),
        "conflicts": [{"tensor": c.name, "reason": c.reason} for c in plan.conflicts],
        "merged": plan.counts(),
        "resolutions": resolutions or [],
    }
    target = report_path(repo, plan.path)
    write_atomic(target, json.dumps(report, indent=1).encode())
    return target


def read_report(repo: Repo, path: str, ids: list[str | None]) -> dict | None:
    """The report for ``path`` if it describes the merge of exactly these three versions."""
    try:
        report = json.loads(report_path(repo, path).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) and report.get("ids") == ids else None


def remove_report(repo: Repo, path: str) -> None:
    try:
        report_path(repo, path).unlink()
    except FileNotFoundError:
        pass
