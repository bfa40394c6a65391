"""migrate import/export: convert a history between git-lfs (or plain blobs) and coral pointers."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from ..errors import UsageError

REVS_HELP = "Revisions as for git rev-list ('main', 'main ^origin/main', 'A..B'); default: the current branch."


def register(app: typer.Typer) -> None:
    mig = typer.Typer(help="Convert a history between git-lfs (or plain files) and coral pointers.", no_args_is_help=True)
    app.add_typer(mig, name="migrate")

    @mig.command("import")
    def import_(
        revs: Annotated[list[str] | None, typer.Argument(metavar="[REV…]", help=REVS_HELP)] = None,
        everything: Annotated[bool, typer.Option("--everything", help="Every local branch and tag.")] = False,
        include: Annotated[list[str] | None, typer.Option("--include", "-I", help="Paths to convert (glob, repeatable; default: the model patterns of 'git coral init').")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", "-X", help="Paths to leave alone (glob, repeatable); LFS files stay LFS.")] = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what the store would hold vs the LFS objects; change nothing.")] = False,
        json_: Annotated[bool, typer.Option("--json", help="Print the report (and commit map) as JSON.")] = False,
    ) -> None:
        """Rewrite history so that model files held as git-lfs pointers or plain blobs become coral pointers."""
        from ..git import install
        from ..git.repo import find_repo, git
        from ..migrate import lfs
        from ..migrate.importer import run_import
        from ..migrate.patterns import PathFilter
        from ..migrate.rewrite import checked_out_branch, new_ref_targets, require_clean, select, update_refs, write_map
        from ..ui import human_bytes

        repo = find_repo()
        cwd = repo.worktree or repo.git_dir
        if repo.worktree is not None and not dry_run:
            require_clean(repo.worktree)
        sel = select(cwd, list(revs or []), everything)
        paths = PathFilter(list(include or install.DEFAULT_PATTERNS), list(exclude or []))
        stats, rw, added = run_import(repo, sel, paths, dry_run=dry_run, progress=not json_)
        source = stats.lfs_bytes + stats.plain_bytes
        report = {
            "commits": stats.commits,
            "files": stats.files,
            "lfs_files": stats.lfs_files,
            "lfs_bytes": stats.lfs_bytes,
            "plain_bytes": stats.plain_bytes,
            "store_bytes": added,
            "lfs_store_bytes": lfs.lfs_store_bytes(repo.common_dir),
            "kept_lfs": sorted(stats.kept_lfs),
            "seconds": round(stats.seconds, 3),
            "dry_run": dry_run,
        }
        ratio = f" ({added / source:.1%})" if source else ""
        summary = (
            f"{stats.files} file version(s) in {stats.commits} commit(s): {human_bytes(source)} "
            f"({human_bytes(stats.lfs_bytes)} in {stats.lfs_files} LFS object(s)) -> "
            f"{human_bytes(added)} in the coral store{ratio}"
        )
        if dry_run:
            if json_:
                print(json.dumps(report, indent=2))
            else:
                print(f"coral: dry run: {summary}", file=sys.stderr)
            return
        moves = new_ref_targets(repo.pygit, cwd, sel.refs, rw.commit_map)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        logdir = repo.store_root / "migrate" / f"import-{stamp}"
        write_map(logdir / "commit-map", rw.commit_map.items())
        write_map(logdir / "refs-before", ((n, sel.refs[n]) for n in moves))
        update_refs(cwd, moves, sel.refs, "coral: migrate import")
        head = checked_out_branch(cwd)
        if repo.worktree is not None:
            install.configure("--local", cwd=repo.worktree)
            install.install_hooks(repo)
            repo.store_root.mkdir(parents=True, exist_ok=True)
            if head in moves:
                # the index still names the old blobs: check the new ones out (model files via coral)
                git("reset", "-q", "--hard", "HEAD", cwd=repo.worktree)
        changed = [(a, b) for a, b in rw.commit_map.items() if a != b]
        if json_:
            print(json.dumps({**report, "refs": moves, "commit_map": dict(changed), "log": str(logdir)}, indent=2))
        else:
            for a, b in changed:
                print(f"{a} {b}")
        print(f"coral: migrated {summary}", file=sys.stderr)
        print(f"coral: {stats.rewritten} commit(s) rewritten, {len(moves)} ref(s) moved; old ids in {logdir}", file=sys.stderr)
        if stats.kept_lfs:
            print(f"coral: left as git-lfs (excluded): {' '.join(sorted(stats.kept_lfs))}", file=sys.stderr)

    @mig.command("export")
    def export(
        revs: Annotated[list[str] | None, typer.Argument(metavar="[REV…]", help=REVS_HELP)] = None,
        everything: Annotated[bool, typer.Option("--everything", help="Every local branch and tag.")] = False,
        to: Annotated[str, typer.Option("--to", help="'lfs' (git-lfs pointers, objects into .git/lfs/objects) or 'plain' (the files themselves).")] = "lfs",
        include: Annotated[list[str] | None, typer.Option("--include", "-I", help="Only these paths (glob, repeatable; default: every coral file).")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", "-X", help="Leave these paths as coral pointers (glob, repeatable).")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print the report and commit map as JSON.")] = False,
    ) -> None:
        """Rewrite history so that coral pointers become git-lfs pointers or plain files (for people without coral-git)."""
        import shutil

        from ..git.repo import find_repo, git
        from ..migrate.exporter import run_export
        from ..migrate.patterns import PathFilter
        from ..migrate.rewrite import checked_out_branch, new_ref_targets, require_clean, select, update_refs, write_map
        from ..ui import human_bytes

        if to not in ("lfs", "plain"):
            raise UsageError("--to takes 'lfs' or 'plain'")
        repo = find_repo()
        cwd = repo.worktree or repo.git_dir
        if repo.worktree is not None:
            require_clean(repo.worktree)
        if to == "lfs" and shutil.which("git-lfs") is None:
            raise UsageError("git-lfs is not installed; install it (e.g. 'apt-get install git-lfs') or use --to plain")
        sel = select(cwd, list(revs or []), everything)
        paths = PathFilter(list(include or ["*"]), list(exclude or []))
        stats, rw = run_export(repo, sel, paths, to, progress=not json_)
        moves = new_ref_targets(repo.pygit, cwd, sel.refs, rw.commit_map)
        logdir = repo.store_root / "migrate" / f"export-{time.strftime('%Y%m%d-%H%M%S')}"
        write_map(logdir / "commit-map", rw.commit_map.items())
        write_map(logdir / "refs-before", ((n, sel.refs[n]) for n in moves))
        update_refs(cwd, moves, sel.refs, f"coral: migrate export --to {to}")
        if repo.worktree is not None and checked_out_branch(cwd) in moves:
            if to == "lfs" and not git("config", "filter.lfs.process", cwd=cwd, check=False):
                git("lfs", "install", "--local", cwd=cwd)
            git("reset", "-q", "--hard", "HEAD", cwd=repo.worktree)
        changed = [(a, b) for a, b in rw.commit_map.items() if a != b]
        if json_:
            print(json.dumps({"commits": stats.commits, "files": stats.files, "bytes": stats.bytes, "refs": moves, "commit_map": dict(changed), "log": str(logdir)}, indent=2))
        else:
            for a, b in changed:
                print(f"{a} {b}")
        print(
            f"coral: exported {stats.files} file version(s) ({human_bytes(stats.bytes)}) to {to} in {stats.commits} commit(s); "
            f"{stats.rewritten} rewritten, {len(moves)} ref(s) moved; old ids in {logdir}",
            file=sys.stderr,
        )
