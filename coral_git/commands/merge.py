"""merge-driver (git's entry point), conflicts and resolve."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ..errors import UsageError


def register(app: typer.Typer) -> None:
    @app.command("merge-driver", hidden=True, context_settings={"ignore_unknown_options": True})
    def merge_driver(
        base: str,
        ours: str,
        theirs: str,
        path: Annotated[str, typer.Argument()] = "",
        marker_size: Annotated[str, typer.Argument()] = "",
    ) -> None:
        """git's merge driver (merge.coral.driver): %O %A %B %P %L."""
        from ..merge import driver as mergedriver

        raise typer.Exit(mergedriver.run(base, ours, theirs, path or ours))

    @app.command()
    def conflicts(paths: Annotated[list[str] | None, typer.Argument(help="Limit to these paths.")] = None) -> None:
        """List the conflicting tensors of every model file left unmerged by a merge."""
        from ..git.repo import find_repo
        from ..merge.resolve import file_conflicts, repo_path

        repo = find_repo()
        found = file_conflicts(repo, [repo_path(repo, p) for p in paths] if paths else None)
        if not any(f.conflicts for f in found):
            print("no model conflicts", file=sys.stderr)
            return
        for f in found:
            if not f.conflicts:
                print(f"{f.path}: resolved, stage it with 'git coral resolve' or 'git add'")
                continue
            n = len(f.conflicts)
            print(f"{f.path}: {n} conflict{'s' if n != 1 else ''}")
            width = max(len(c.name) for c in f.conflicts) or 1
            for c in f.conflicts:
                print(f"  {(c.name or '(whole file)'):<{width}}  {c.reason}")
            for glob, spec in f.resolutions:
                print(f"  (chosen so far: {glob} = {spec})")

    @app.command("merge-shards")
    def merge_shards(
        index: Annotated[str, typer.Argument(help="The shard index, e.g. model.safetensors.index.json.")],
        dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Only say what would be taken; write nothing.")] = False,
    ) -> None:
        """After 'git merge' stopped on a sharded checkpoint: merge it by tensor name, in our sharding."""
        from ..api.shardmerge import merge_sharded

        res = merge_sharded(index, write=not dry_run)
        for name in res.conflicts:
            print(f"  conflict  {name}  changed on both sides", file=sys.stderr)
        if res.conflicts:
            print(f"{res.index}: {len(res.conflicts)} tensor(s) changed on both sides; nothing written. "
                  "Edit the shards, or take a side with 'git checkout --ours/--theirs', then add them", file=sys.stderr)  # fmt: skip
            raise typer.Exit(1)
        print(f"{res.index}: {len(res.theirs)} tensor(s) from their side, {len(res.removed)} removed"
              + ("" if dry_run else f"; wrote and staged {len(res.written)} shard(s), removed {len(res.dropped)} stale shard file(s)"),
              file=sys.stderr)  # fmt: skip

    @app.command()
    def resolve(
        path: Annotated[str, typer.Argument(help="The conflicted model file.")],
        ours: Annotated[bool, typer.Option("--ours", help="Take our side of each conflicting tensor.")] = False,
        theirs: Annotated[bool, typer.Option("--theirs", help="Take their side of each conflicting tensor.")] = False,
        strategy: Annotated[str | None, typer.Option("--strategy", "-s", help="average, weighted[:α], task-arithmetic[:λ], ties[:density], ours, theirs.")] = None,
        tensor: Annotated[list[str] | None, typer.Option("--tensor", "-t", help="Only conflicting tensors matching this glob (repeatable).")] = None,
    ) -> None:
        """Resolve a model file's conflicting tensors and stage the result once none is left."""
        from ..git.repo import find_repo
        from ..merge.resolve import resolve as do_resolve

        chosen = [s for s in ("ours" if ours else None, "theirs" if theirs else None, strategy) if s]
        if len(chosen) != 1:
            raise UsageError("give exactly one of --ours, --theirs, --strategy S")
        res = do_resolve(find_repo(), path, chosen[0], tensor or None)
        if res.staged:
            print(f"{res.path}: resolved and staged; run 'git commit' (or 'git rebase --continue') to conclude", file=sys.stderr)
            return
        print(f"{res.path}: {len(res.remaining)} conflict(s) left:", file=sys.stderr)
        for c in res.remaining:
            print(f"  {c.name or '(whole file)'}  {c.reason}", file=sys.stderr)
        raise typer.Exit(1)
