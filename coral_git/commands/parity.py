"""ls-files, status, env, uninstall: the commands a git-lfs user reaches for, each with --json."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("ls-files")
    def ls_files(
        rev: Annotated[str | None, typer.Argument(help="A revision (default: the index, like 'git lfs ls-files').")] = None,
        long: Annotated[bool, typer.Option("--long", "-l", help="The full file id, not its first 10 digits.")] = False,
        size: Annotated[bool, typer.Option("--size", "-s", help="Show each file's size.")] = False,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Model files stored through coral: id, '*' if the content is in the local store ('-' if not), path."""
        from ..adopt.listing import list_files
        from ..git.repo import find_repo
        from ..ui import human_bytes

        repo = find_repo()
        rows = list_files(repo, rev)
        if json_:
            print(json.dumps({"files": rows}, indent=2))
            return
        for r in rows:
            fid = r["id"] if long else r["id"][:10]
            extra = f" ({human_bytes(r['size'])})" if size else ""
            print(f"{fid} {'*' if r['present'] else '-'} {r['path']}{extra}")

    @app.command()
    def status(
        remote: Annotated[str | None, typer.Option("--remote", help="The remote whose chunk store to compare with (default: upstream or origin).")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Model files staged and changed, and the chunks HEAD needs that the remote's store does not have yet."""
        from ..adopt.status import repo_status
        from ..git.repo import find_repo
        from ..ui import human_bytes

        st = repo_status(find_repo(), remote)
        if json_:
            print(json.dumps(st, indent=2))
            return
        print(f"On branch {st['branch'] or '(detached)'}")
        push = st["push"]
        if push.get("error"):
            print(f"Chunk store: {push['error']}")
        elif push.get("remote"):
            n = push["missing_chunks"]
            print(
                f"Chunks to push to {push['remote']} ({push['store']}): {n} of {push['needed_chunks']}"
                + (f", {human_bytes(push['missing_bytes'])}" if n else " (up to date)")
            )
            for f in push["files"]:
                print(f"\t{f}")
        print("\nModel files to be committed:")
        for f in st["staged"] or []:
            print(f"\t{f['status']:<9} {f['path']}")
        print("\nModel files not staged for commit:")
        for f in st["unstaged"] or []:
            print(f"\t{f['status']:<9} {f['path']}")
        if st["pointers_in_worktree"]:
            print(f"\n{len(st['pointers_in_worktree'])} model file(s) checked out as pointers (git coral pull):")
            for p in st["pointers_in_worktree"]:
                print(f"\t{p}")

    @app.command()
    def env(json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
        """Versions, store path, remotes and their stores, and every setting in effect with where it comes from."""
        from ..adopt.environment import environment

        e = environment()
        if json_:
            print(json.dumps(e, indent=2))
            return
        for k, v in e["versions"].items():
            print(f"{k} {v}")
        print()
        for k in ("git_dir", "worktree", "store", "store_objects", "store_bytes", "lfs_objects_bytes"):
            print(f"{k}={e['repository'].get(k)}")
        for r in e["remotes"]:
            print(f"remote.{r['name']}: git {r['url']}; chunks {r['store']}")
        print("filter.coral.process=" + (e["installed"].get("filter.coral.process") or "(not configured: git coral init)"))
        for s in e["settings"]:
            print(f"{s['key']}={s['value']}  ({s['source']})")

    @app.command()
    def uninstall(
        global_: Annotated[bool, typer.Option("--global", help="Remove the user-wide settings 'git coral init --global' wrote.")] = False,
    ) -> None:
        """Undo 'git coral init': remove the filter/diff/merge settings, coral's hooks (restoring chained ones) and the clean caches.

        .gitattributes and the store are left alone (like 'git lfs uninstall'): untrack patterns with
        'git coral untrack', and model files stay readable once you reinstall.
        """
        from ..adopt.uninstall import uninstall as undo
        from ..git.repo import find_repo

        if global_:
            done = undo(None, "--global")
        else:
            done = undo(find_repo(), "--local")
        for line in done:
            print(line, file=sys.stderr)
        if not done:
            print("coral-git was not installed here; nothing to undo", file=sys.stderr)
