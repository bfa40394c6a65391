"""``git coral init``/``track``/``untrack``: git config, .gitattributes and chained hooks."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
from importlib import resources
from pathlib import Path

from .repo import SHARED_FILE, Repo, git

DEFAULT_PATTERNS = (
    "*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt", "*.gguf", "*.onnx", "*.npy", "*.npz",
    # ONNX external data: torch.onnx.export and onnx.save write <model>.onnx.data, optimum <model>.onnx_data
    "*.onnx.data", "*.onnx_data",
)  # fmt: skip
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
    # patch machinery (add -p, restore -p, stash -p, apply) treats model files as binary: a pointer is
    # taken whole or not at all; git diff still shows the driver's and textconv's output
    "diff.coral.binary": "true",
}


def configure(scope: str, cwd: Path | None = None) -> list[str]:
    """Write the filter/diff/merge settings into git config (``--local`` or ``--global``)."""
    done = []
    for key, value in CONFIG.items():
        git("config", scope, key, value, cwd=cwd)
        done.append(f"{key} = {value}")
    return done


def escape_pattern(pattern: str) -> str:
    """A pattern as .gitattributes needs it: whitespace would end the pattern, so spell it
    ``[[:space:]]`` like git-lfs does (``'my weights.data'`` -> ``my[[:space:]]weights.data``)."""
    return "".join("[[:space:]]" if c.isspace() else c for c in pattern)


def attribute_line(pattern: str) -> str:
    return f"{escape_pattern(pattern)} {ATTRS}"


def track(worktree: Path, patterns: list[str]) -> list[str]:
    """Add ``pattern filter=coral …`` lines to .gitattributes; return the patterns newly added."""
    path = worktree / ".gitattributes"
    lines = path.read_text().splitlines() if path.exists() else []
    have = {ln.split()[0] for ln in lines if ln.strip() and not ln.startswith("#") and "filter=coral" in ln}
    added = [p for p in patterns if escape_pattern(p) not in have]
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
    wanted = {escape_pattern(p): p for p in patterns}
    for ln in path.read_text().splitlines():
        parts = ln.split()
        if parts and parts[0] in wanted and "filter=coral" in ln:
            removed.append(wanted[parts[0]])
        else:
            keep.append(ln)
    path.write_text("\n".join(keep) + ("\n" if keep else ""))
    return removed


def tracked(worktree: Path) -> list[str]:
    path = worktree / ".gitattributes"
    if not path.exists():
        return []
    return [ln.split()[0] for ln in path.read_text().splitlines() if "filter=coral" in ln and ln.split()]


def hook_script(name: str) -> str:
    """The text of hook ``name``: the file ``hooks/NAME`` of the source tree, shipped in the package.

    ``coral_git/hook_scripts`` is a link to the top-level ``hooks/`` folder, so a source checkout,
    an editable install and a wheel (setuptools copies the linked files as package data) all read
    the same file.
    """
    return (resources.files("coral_git") / "hook_scripts" / name).read_text()


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


HOOKS_SKIPPED = "hooks-skipped"  # in the store: the core.hooksPath notice was given once


def _ours(hook: Path) -> bool | None:
    """True for a coral hook, False for another tool's, None when there is none."""
    try:
        with open(hook, "rb") as f:
            return HOOK_MARK.encode() in f.read(4096)
    except FileNotFoundError:
        return None


def ensure_hooks(repo: Repo) -> list[str]:
    """Install the coral hooks a repository lacks; called by every filter run, like git-lfs's
    ``filter-process`` does (``lfs.InstallHooks(false)``).

    Why: ``git coral init --global`` configures the filter for every repository but cannot reach
    their hooks, and a clone without the pre-push hook pushes commits whose chunks never reach the
    remote. Cheap when they are there (four small reads, no subprocess). Never overwrites: a hook of
    another tool is kept as ``<name>.pre-coral`` and chained, as ``init`` does; when that name is
    taken by another hook than this one, the hook is left alone. Nothing is installed in a bare repository, with
    ``coral.autoHooks=false``, or when ``core.hooksPath`` is set: such a folder is shared between
    repositories or committed with one (husky, pre-commit), so it is the user's to change (``git
    coral init`` installs there on request); a one-line notice says so, once per repository.
    Returns lines for stderr (empty when nothing worth saying happened).
    """
    if repo.worktree is None or not repo.setting_bool("coral.autoHooks", True):
        return []
    if repo.config.get("core.hookspath"):
        marker = repo.store_root / HOOKS_SKIPPED
        if marker.exists():
            return []
        repo.store_root.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return [f"core.hooksPath is set ({repo.config['core.hookspath']}), so coral installs no hooks there by "
                "itself: run 'git coral init' in this repository, or 'git push' will not upload model chunks"]
    hooks_dir = repo.common_dir / "hooks"
    if all(_ours(hooks_dir / name) for name in HOOKS):
        return []
    hooks_dir.mkdir(parents=True, exist_ok=True)
    repo.store_root.mkdir(parents=True, exist_ok=True)
    done = []
    with open(repo.store_root / "hooks.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent filter runs (several worktrees): one installs
        for name in HOOKS:
            hook = hooks_dir / name
            state = _ours(hook)
            if state:
                continue
            kept = hooks_dir / f"{name}.pre-coral"
            # the same hook as the one kept (e.g. 'git lfs install --force' wrote its hook again over
            # coral's): the chain already runs it, so coral's goes back; another one is left alone
            same = state is False and kept.exists() and kept.read_bytes() == hook.read_bytes()
            if state is False and kept.exists() and not same:
                continue
            tmp = hooks_dir / f".{name}.coral-{os.getpid()}"
            tmp.write_text(hook_script(name))
            tmp.chmod(0o755)
            if state is False and not same:
                os.rename(hook, kept)
                done.append(f"hook {name}: the existing hook is kept as {kept.name} and runs first")
            os.replace(tmp, hook)
    return done


def set_shared(worktree: Path, key: str, value: str) -> Path:
    """Write ``key = value`` into ``<worktree>/.coralconfig``, the settings committed with the repository."""
    path = worktree / SHARED_FILE
    git("config", "--file", str(path), key, value, cwd=worktree)
    return path
