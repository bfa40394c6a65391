"""git's merge driver for model files: ``merge.coral.driver = git-coral merge-driver %O %A %B %P %L``.

git hands the driver three temp files holding the repository form of the file (pointers): base
(%O, empty when there is no common ancestor), ours (%A) and theirs (%B). The driver writes the
merged pointer to %A and exits 0, or leaves %A as ours (a loadable model, never conflict
markers), writes a conflict report under ``$GIT_DIR/coral/merge/`` and exits 1.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import quote

from .clean import clean
from .errors import CoralError, UsageError
from .merge import MergePlan, MergeSettings, merged_pointer, parse_pointer_or_none, plan_merge
from .pointer import Pointer
from .repo import Repo, find_repo, git

ENV_STRATEGY = "CORAL_MERGE_STRATEGY"
ENV_TENSOR_STRATEGY = "CORAL_MERGE_TENSOR_STRATEGY"
ATTRIBUTE = "coral-merge"
PARAMS = {  # parameter → (git config key, environment variable)
    "alpha": ("coral.merge.alpha", "CORAL_MERGE_ALPHA"),
    "lambda": ("coral.merge.lambda", "CORAL_MERGE_LAMBDA"),
    "density": ("coral.merge.tiesDensity", "CORAL_MERGE_TIES_DENSITY"),
}


def log(msg: str) -> None:
    sys.stderr.write(f"coral: {msg}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# settings from git config, gitattributes and the environment
# ---------------------------------------------------------------------------------------------


def parse_rules(text: str, where: str) -> list[tuple[str, str]]:
    """``"head.*=theirs;*=average"`` → ``[("head.*", "theirs"), ("*", "average")]``."""
    rules = []
    for item in text.replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        glob, sep, spec = item.rpartition("=")
        if not sep or not glob.strip() or not spec.strip():
            raise UsageError(f"{where}: {item!r} is not GLOB=STRATEGY")
        rules.append((glob.strip(), spec.strip()))
    return rules


def path_attribute(repo: Repo, path: str) -> str | None:
    """The value of the ``coral-merge`` gitattribute for ``path``, if it has one."""
    out = git("check-attr", "-z", ATTRIBUTE, "--", path, cwd=repo.worktree or repo.git_dir, check=False)
    parts = out.split("\0")
    value = parts[2] if len(parts) >= 3 else "unspecified"
    return None if value in ("unspecified", "set", "unset", "") else value


def load_settings(repo: Repo, path: str, env: dict[str, str] | None = None) -> MergeSettings:
    """The strategy for ``path``: env ``CORAL_MERGE_STRATEGY``, else the ``coral-merge``
    gitattribute, else ``coral.merge.strategy``, else ``conflict``; per-tensor rules from env
    ``CORAL_MERGE_TENSOR_STRATEGY`` first, then every ``coral.merge.tensorStrategy`` value.
    """
    env = os.environ if env is None else env
    strategy = env.get(ENV_STRATEGY) or path_attribute(repo, path) or repo.config.get("coral.merge.strategy") or "conflict"
    rules = parse_rules(env.get(ENV_TENSOR_STRATEGY, ""), ENV_TENSOR_STRATEGY)
    cwd = repo.worktree or repo.git_dir
    for value in git("config", "--get-all", "coral.merge.tensorStrategy", cwd=cwd, check=False).splitlines():
        rules += parse_rules(value, "coral.merge.tensorStrategy")
    params: dict[str, float] = {}
    for name, (key, var) in PARAMS.items():
        raw = env.get(var) or repo.config.get(key.lower())
        if raw is None:
            continue
        try:
            params[name] = float(raw)
        except ValueError:
            raise UsageError(f"{key} = {raw!r} is not a number; fix it with 'git config {key} <number>'") from None
    settings = MergeSettings(strategy.strip(), tuple(rules), params)
    settings.check()
    return settings


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
    from .store.objects import write_atomic

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


# ---------------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------------


GIT_TEMP_PREFIX = ".merge_file_"  # git's ll-merge names the %O/%A/%B temp files so


def as_pointer(repo: Repo, data: bytes, path: str) -> Pointer:
    """The pointer ``data`` is, or the pointer of ``data`` stored now (a file committed raw)."""
    p = parse_pointer_or_none(data)
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
        if parse_pointer_or_none(ours_data) is None and not Path(ours_file).name.startswith(GIT_TEMP_PREFIX):
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
