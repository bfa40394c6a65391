"""init, track, untrack, and the hook entry point."""

from __future__ import annotations

import shutil
import sys
from typing import Annotated

import typer

from ..errors import UsageError


def _pointer_settings(repo, chunk_size: str | None) -> list[str]:
    """Write ``--chunk-size`` into .coralconfig; explain where settings that change pointers live."""
    from ..git.install import set_shared
    from ..git.repo import POINTER_SETTINGS, SHARED_FILE, _parse_size, shared_value

    assert repo.worktree is not None
    key = "coral.chunkSize"
    _, lo, hi = POINTER_SETTINGS[key]
    if chunk_size is not None:
        try:
            value = _parse_size(chunk_size)
        except ValueError:
            raise UsageError(f"--chunk-size {chunk_size!r} is not a size; use e.g. 1M, 4M or 65536") from None
        if not lo <= value <= hi:
            raise UsageError(f"--chunk-size {chunk_size} is out of range [{lo}, {hi}]")
        set_shared(repo.worktree, key, chunk_size)
    shared = shared_value(key, repo.worktree, repo.worktree)
    lines = []
    if shared is not None:
        lines.append(f"  {SHARED_FILE}: {key} = {shared} (commit it: pointers depend on it, so it travels with the "
                     "repository; local git config may only agree)")
    else:
        lines.append(f"  chunk size: default; to choose one for every clone, run 'git coral init --chunk-size 4M' "
                     f"and commit {SHARED_FILE} (pointers depend on it; a per-clone git config value does not travel)")
        local = repo.config.get(key.lower())
        if local is not None:
            lines.append(f"warning: {key} = {local} is set in git config only: other clones will cut different "
                         f"pointers; run 'git coral init --chunk-size {local}' and commit {SHARED_FILE}")
    return lines


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        global_: Annotated[bool, typer.Option("--global", help="Configure the filter for every repository of this user (like 'git lfs install').")] = False,
        chunk_size: Annotated[str | None, typer.Option("--chunk-size", help="Write coral.chunkSize (e.g. 4M) into .coralconfig, which travels with the repository: pointers depend on it.")] = None,
    ) -> None:
        """Configure the filter, diff and merge drivers, .gitattributes and hooks. Safe to run again."""
        from ..git import install
        from ..git.repo import find_repo

        if shutil.which("git-coral") is None:
            print("warning: 'git-coral' is not on PATH; git will not find the filter until it is", file=sys.stderr)
        if global_:
            if chunk_size is not None:
                raise UsageError("--chunk-size is a setting of one repository (its .coralconfig); run it without --global")
            for line in install.configure("--global"):
                print(line, file=sys.stderr)
            print("  hooks: each repository gets coral's hooks (pre-push uploads chunks) from its first filter run, "
                  "or from 'git coral init' there; not where core.hooksPath is set (run 'git coral init' there)",
                  file=sys.stderr)
            return
        repo = find_repo()
        if repo.worktree is None:
            raise UsageError("'git coral init' needs a work tree; in a bare repository use 'git coral init --global'")
        from ..git import existing as adopt

        install.configure("--local", cwd=repo.worktree)
        lfs_lines = adopt.lfs_patterns(repo.worktree)
        migrated = any(r["filter"] == "coral" for r in adopt.tracked_patterns(repo.worktree))
        if lfs_lines and not migrated:
            # coral lines next to lfs lines would fight over the same files: leave .gitattributes and hooks alone
            repo.store_root.mkdir(parents=True, exist_ok=True)
            print(f"coral-git configured in {repo.worktree}, but this repository keeps files in git-lfs ({' '.join(lfs_lines)})", file=sys.stderr)
            print("  .gitattributes left unchanged; to store the model files through coral, convert the history:", file=sys.stderr)
            print("  git coral migrate import --everything --dry-run   (what it would do)", file=sys.stderr)
            print("  git coral migrate import --everything             (rewrite; see docs/migrate.md)", file=sys.stderr)
            return
        # a pattern git-lfs tracks stays LFS (after 'migrate import --exclude', say): no second filter line
        added = install.track(repo.worktree, [p for p in install.DEFAULT_PATTERNS if p not in lfs_lines])
        hooks = install.install_hooks(repo)
        repo.store_root.mkdir(parents=True, exist_ok=True)
        print(f"coral-git initialised in {repo.worktree}", file=sys.stderr)
        if added:
            print(f"  .gitattributes: tracking {' '.join(added)}", file=sys.stderr)
        for h in hooks:
            print(f"  hook {h}", file=sys.stderr)
        for line in _pointer_settings(repo, chunk_size):
            print(line, file=sys.stderr)
        left = adopt.pointer_files(repo.worktree)
        if left:
            print(f"  {len(left)} model file(s) in the work tree are still pointers; run 'git coral pull' to fetch and check them out", file=sys.stderr)

    @app.command()
    def track(
        patterns: Annotated[list[str] | None, typer.Argument(help="Path patterns, e.g. '*.onnx' or 'ckpt/**'; none: list the tracked patterns.")] = None,
        json_: Annotated[bool, typer.Option("--json", help="With no PATTERNS: print the list as JSON.")] = False,
    ) -> None:
        """Store files matching PATTERNS through coral (edits .gitattributes); with none, list the tracked patterns."""
        from ..git import install
        from ..git.repo import find_repo

        repo = find_repo()
        if repo.worktree is None:
            raise UsageError("track needs a work tree")
        if not patterns:
            from ..git import existing as adopt

            rows = adopt.tracked_patterns(repo.worktree)
            if json_:
                import json

                print(json.dumps(rows, indent=2))
                return
            print("Listing tracked patterns")
            for r in rows:
                if r["filter"] == "coral":
                    print(f"    {r['pattern']} ({r['file']})")
            other = [r for r in rows if r["filter"] != "coral"]
            if other:
                print("Listing patterns of other filters")
                for r in other:
                    print(f"    {r['pattern']} filter={r['filter']} ({r['file']})")
            return
        added = install.track(repo.worktree, patterns)
        for p in patterns:
            print(f"{'tracking' if p in added else 'already tracked'}: {p}", file=sys.stderr)

    @app.command()
    def untrack(patterns: Annotated[list[str], typer.Argument(help="Patterns previously given to track.")]) -> None:
        """Stop storing files matching PATTERNS through coral (edits .gitattributes)."""
        from ..git import install
        from ..git.repo import find_repo

        repo = find_repo()
        if repo.worktree is None:
            raise UsageError("untrack needs a work tree")
        removed = install.untrack(repo.worktree, patterns)
        for p in patterns:
            print(f"{'untracked' if p in removed else 'was not tracked'}: {p}", file=sys.stderr)

    @app.command(hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def hook(ctx: typer.Context, name: str) -> None:
        """Entry point of the git hooks that 'init' installs (the scripts in hooks/ call it)."""
        from ..filter.direct import DIRECT_HOOKS, hook_step
        from ..remote.push import pre_push

        # hook name -> coral's step; a hook coral has no step for passes
        steps = {"pre-push": pre_push, **dict.fromkeys(DIRECT_HOOKS, hook_step)}
        step = steps.get(name)
        raise typer.Exit(step(list(ctx.args), sys.stdin.read()) if step is not None else 0)
