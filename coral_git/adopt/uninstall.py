"""``git coral uninstall``: the reverse of ``init`` — git settings out, chained hooks back in place."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..filter.fresh import CACHE_FILE
from ..git.install import CONFIG, HOOK_MARK, HOOKS
from ..git.repo import Repo, git, run_git

SECTIONS = sorted({k.rsplit(".", 1)[0] for k in CONFIG})


def uninstall(repo: Repo | None, scope: str) -> list[str]:
    """Remove coral's config sections in ``scope``; for a repository also its hooks (the kept one returns)
    and the clean caches of its work trees (``coral-cleaned``: nothing would keep them current). The store
    stays: model files must stay readable once coral is installed again."""
    cwd = (repo.worktree or repo.git_dir) if repo is not None else None
    done = []
    for section in SECTIONS:
        proc = run_git(["config", scope, "--remove-section", section], cwd)
        if proc.returncode == 0:
            done.append(f"removed git config {scope.lstrip('-')} {section}.*")
    if repo is None:
        return done
    hooks_dir = Path(git("rev-parse", "--path-format=absolute", "--git-path", "hooks", cwd=cwd))
    for name in HOOKS:
        hook = hooks_dir / name
        if not hook.exists() or HOOK_MARK not in hook.read_text(errors="replace"):
            continue
        kept = hooks_dir / f"{name}.pre-coral"
        if kept.exists():
            shutil.move(kept, hook)
            done.append(f"hook {name}: the earlier hook restored")
        else:
            hook.unlink()
            done.append(f"hook {name}: removed")
    caches = [repo.common_dir / CACHE_FILE, *sorted((repo.common_dir / "worktrees").glob(f"*/{CACHE_FILE}"))]
    for cache in caches:
        if cache.exists():
            cache.unlink()
            done.append(f"removed the clean cache {cache}")
    return done
