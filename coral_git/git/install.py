"""``git coral init``/``track``/``untrack``: git config, .gitattributes and chained hooks."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from .repo import Repo, git

DEFAULT_PATTERNS = ("*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt")
ATTRS = "filter=coral diff=coral merge=coral -text"
HOOK_MARK = "# coral-git hook"
HOOKS = ("pre-push", "post-checkout", "post-merge", "post-rewrite")

CONFIG = {
    "filter.coral.process": "git-coral filter-process",
    "filter.coral.clean": "git-coral clean %f",
    "filter.coral.smudge": "git-coral smudge %f",
    "filter.coral.required": "true",
    "merge.coral.name": "coral-git per-tensor model merge",
    "merge.coral.driver": "git-coral merge-driver %O %A %B %P %L",
    "diff.coral.command": "git-coral diff-driver",
    "diff.coral.textconv": "git-coral textconv",
}


def configure(scope: str, cwd: Path | None = None) -> list[str]:
    """Write the filter/diff/merge settings into git config (``--local`` or ``--global``)."""
    done = []
    for key, value in CONFIG.items():
        git("config", scope, key, value, cwd=cwd)
        done.append(f"{key} = {value}")
    return done


def attribute_line(pattern: str) -> str:
    return f"{pattern} {ATTRS}"


def track(worktree: Path, patterns: list[str]) -> list[str]:
    """Add ``pattern filter=coral …`` lines to .gitattributes; return the patterns newly added."""
    path = worktree / ".gitattributes"
    lines = path.read_text().splitlines() if path.exists() else []
    have = {ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#") and "filter=coral" in ln}
    added = [p for p in patterns if p not in have]
    if added:
        lines.extend(attribute_line(p) for p in added)
        path.write_text("\n".join(lines) + "\n")
    return added


def untrack(worktree: Path, patterns: list[str]) -> list[str]:
    """Remove the coral lines for ``patterns`` from .gitattributes; return those removed."""
    path = worktree / ".gitattributes"
    if not path.exists():
        return []
    keep, removed = [], []
    for ln in path.read_text().splitlines():
        parts = ln.split()
        if parts and parts[0] in patterns and "filter=coral" in ln:
            removed.append(parts[0])
        else:
            keep.append(ln)
    path.write_text("\n".join(keep) + ("\n" if keep else ""))
    return removed


def tracked(worktree: Path) -> list[str]:
    path = worktree / ".gitattributes"
    if not path.exists():
        return []
    return [ln.split()[0] for ln in path.read_text().splitlines() if "filter=coral" in ln and ln.split()]


# A shell test that must hold for coral's step to run at all: these hooks run on every checkout,
# merge and rebase, and starting Python costs more than the whole step usually does.
HOOK_GUARDS = {
    # direct checkout (git/direct.py): only when a filter process died (or is a zombie) with files pending
    name: 'd="$(git rev-parse --git-dir)/coral-direct"; for f in "$d"/*; do '
    '[ -e "$f" ] || continue; p=${f##*/}; kill -0 "$p" 2>/dev/null || exit 0; '
    'case "$(cat "/proc/$p/stat" 2>/dev/null)" in *") Z "*) exit 0;; esac; done; exit 1'
    for name in ("post-checkout", "post-merge", "post-rewrite")
}


def hook_script(name: str) -> str:
    guard = HOOK_GUARDS.get(name)
    step = f"""printf '%s\\n' "$input" | git-coral hook {name} "$@\""""
    if guard:
        step = f"if ( {guard} ); then\n  {step}\nfi"
    return f"""#!/bin/sh
{HOOK_MARK}: runs any hook that was here before, then coral-git's own step.
# The earlier hook, if any, was kept as {name}.pre-coral next to this file.
hookdir=$(dirname "$0")
input=$(cat)
if [ -x "$hookdir/{name}.pre-coral" ]; then
  printf '%s\\n' "$input" | "$hookdir/{name}.pre-coral" "$@" || exit $?
fi
{step}
"""


def install_hooks(repo: Repo) -> list[str]:
    """Install coral's hooks, keeping an existing hook as ``<name>.pre-coral`` and calling it first."""
    hooks_dir = Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=repo.worktree))
    hooks_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for name in HOOKS:
        hook = hooks_dir / name
        if hook.exists() and HOOK_MARK not in hook.read_text(errors="replace"):
            kept = hooks_dir / f"{name}.pre-coral"
            if kept.exists():
                kept = hooks_dir / f"{name}.pre-coral.{os.getpid()}"
            shutil.move(hook, kept)
            done.append(f"{name}: existing hook kept as {kept.name} and chained")
        hook.write_text(hook_script(name))
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        done.append(f"{name}: installed")
    return done
