"""remote set/show, push, fetch, pull: moving chunks between .git/coral and remote stores."""

from __future__ import annotations

import sys
from typing import Annotated

import typer


def _repo():
    from ..git.repo import find_repo

    return find_repo()


def _remote_name(repo, name: str | None, key: str) -> str:
    from ..errors import UsageError
    from ..remote.backends import default_remote

    name = name or default_remote(repo, key)
    if not name:
        raise UsageError("no remote given and none configured; name one, e.g. 'origin'")
    return name


def register(app: typer.Typer) -> None:
    remote_app = typer.Typer(help="Where each git remote's chunks are stored.", no_args_is_help=True)
    app.add_typer(remote_app, name="remote")

    @remote_app.command("set")
    def remote_set(
        name: Annotated[str, typer.Argument(help="The git remote, e.g. origin.")],
        url: Annotated[str, typer.Argument(help="A directory, file:// URL or s3://bucket/prefix.")],
        shared: Annotated[bool, typer.Option("--shared", help="Write it to .coralconfig (commit that file) so clones find it.")] = False,
    ) -> None:
        """Store the chunks of git remote NAME at URL (git config coral.remote.NAME.url)."""
        from ..errors import UsageError
        from ..git.repo import git
        from ..remote.backends import store_for_url

        repo = _repo()
        cwd = repo.worktree or repo.git_dir
        store_for_url(name, url, cwd)  # validates the URL
        if shared:
            if repo.worktree is None:
                raise UsageError("--shared needs a work tree")
            git("config", "--file", str(repo.worktree / ".coralconfig"), f"coral.remote.{name}.url", url, cwd=cwd)
            print(f"chunks of remote '{name}' go to {url} (in .coralconfig: commit it)", file=sys.stderr)
            return
        git("config", f"coral.remote.{name}.url", url, cwd=cwd)
        print(f"chunks of remote '{name}' go to {url}", file=sys.stderr)

    @remote_app.command("show")
    def remote_show(name: Annotated[str | None, typer.Argument(help="The git remote (default: all).")] = None) -> None:
        """Print each git remote and its chunk store."""
        from ..errors import CoralError
        from ..git.repo import git
        from ..remote.backends import resolve

        repo = _repo()
        cwd = repo.worktree or repo.git_dir
        names = [name] if name else git("remote", cwd=cwd).split()
        if not names:
            print("no git remotes: add one with 'git remote add origin URL' (its chunk store follows from the URL, "
                  "or set one with 'git coral remote set NAME URL')", file=sys.stderr)
            return
        for n in names:
            try:
                store = resolve(repo, n).url
            except CoralError as exc:
                store = f"(none: {exc})"
            print(f"{n}\t{store}")

    @app.command()
    def push(
        remote: Annotated[str | None, typer.Argument(help="Git remote (default: the branch's upstream or origin).")] = None,
        all_: Annotated[bool, typer.Option("--all", help="Every chunk reachable from any ref, not just HEAD.")] = False,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be uploaded (files and sizes); upload nothing.")] = False,
        json_: Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")] = False,
    ) -> None:
        """Upload the chunks that HEAD's history (or every ref's, with --all) needs and the remote lacks."""
        from ..remote.backends import resolve
        from ..remote.push import needed_chunks, push_chunks, push_options

        repo = _repo()
        name = _remote_name(repo, remote, "coral.pushRemote")
        cwd = repo.worktree or repo.git_dir
        named_by: dict[str, list[int]] = {}
        groups: list[list[str]] = []
        ids, where = needed_chunks(cwd, ["--all"] if all_ else ["HEAD"], named_by, groups)
        store = resolve(repo, name)
        if hasattr(store, "order_hint"):
            store.order_hint(named_by)  # packs hold what the same versions need (remote/packorder.py)
        if dry_run:
            from ..adopt.pushplan import plan
            from ..ui import human_bytes

            rep = plan(repo, store, ids, where)
            if json_:
                import json

                print(json.dumps(rep, indent=2))
                return
            for f in rep["files"]:
                print(f"push {f['path']} ({f['chunks']} chunk(s), {human_bytes(f['bytes'])})")
            print(f"coral: dry run: would upload {rep['missing_chunks']} of {rep['needed_chunks']} chunk object(s), "
                  f"{human_bytes(rep['missing_bytes'])} (as stored locally) to {store.describe()}", file=sys.stderr)
            return
        stats = push_chunks(repo.store, store, ids, where=where, groups=groups, **push_options(repo))
        print(f"coral: {stats.line(store)}", file=sys.stderr)

    @app.command()
    def fetch(
        remote: Annotated[str | None, typer.Argument(help="Git remote (default: the branch's upstream or origin).")] = None,
        rev: Annotated[str, typer.Option("--rev", help="The revision whose files to fetch.")] = "HEAD",
        include: Annotated[list[str] | None, typer.Option("--include", "-I", help="Only paths matching this glob (repeatable; default: coral.fetchInclude).")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", "-X", help="Not paths matching this glob (repeatable; default: coral.fetchExclude).")] = None,
        recent: Annotated[bool, typer.Option("--recent", help="Also the tips of branches with commits in the last coral.fetchRecentRefsDays (7) days.")] = False,
        all_: Annotated[bool, typer.Option("--all", help="Every file version reachable from any ref (for offline work or a backup).")] = False,
    ) -> None:
        """Download the chunks the files of REV need (and their delta bases) into the local store."""
        from ..adopt.fetchsel import select_pointers
        from ..remote.backends import resolve
        from ..remote.fetch import fetch_objects

        repo = _repo()
        name = _remote_name(repo, remote, "coral.fetchRemote")
        files, ids = select_pointers(repo, rev, include, exclude, recent=recent, everything=all_)
        store = resolve(repo, name)
        stats = fetch_objects(repo.store, store, ids)
        print(f"coral: {files} file version(s); {stats.line(store)}", file=sys.stderr)

    @app.command()
    def pull(
        remote: Annotated[str | None, typer.Argument(help="Git remote (default: the branch's upstream or origin).")] = None,
        include: Annotated[list[str] | None, typer.Option("--include", "-I", help="Only paths matching this glob (repeatable; default: coral.fetchInclude).")] = None,
        exclude: Annotated[list[str] | None, typer.Option("--exclude", "-X", help="Not paths matching this glob (repeatable; default: coral.fetchExclude).")] = None,
    ) -> None:
        """Fetch the chunks of HEAD's files, then check out the files still left as pointers."""
        from ..adopt.fetchsel import path_globs, select_pointers
        from ..core.globs import selected
        from ..git.repo import git
        from ..remote.backends import resolve
        from ..remote.fetch import fetch_objects

        repo = _repo()
        name = _remote_name(repo, remote, "coral.fetchRemote")
        n, ids = select_pointers(repo, "HEAD", include, exclude)
        store = resolve(repo, name)
        stats = fetch_objects(repo.store, store, ids)
        print(f"coral: {n} file(s); {stats.line(store)}", file=sys.stderr)
        if repo.worktree is None:
            return
        inc, exc = path_globs(repo, include, exclude)
        left = [(path, p) for path, p in _pointer_files(repo, []) if selected(path, inc, exc)]
        for path, p in left:
            _rewrite(repo, path, p)
        if left:
            # the index still holds the pointer's size, and git takes a size change for a modification
            # without hashing: re-hash these paths (clean gives the same pointer) to refresh their entries
            git("update-index", "-q", "--", *(path for path, _ in left), cwd=repo.worktree)
            print(f"coral: checked out {len(left)} file(s) left as pointers", file=sys.stderr)


def _rewrite(repo, path: str, p) -> None:
    """Replace the pointer file at ``path`` by its content: temp file beside it, fsync, rename."""
    from ..filter.direct import write_file

    write_file(repo, path, p)


def _pointer_files(repo, include: list[str]) -> list[tuple[str, object]]:
    """Work-tree files whose index entry is a pointer and whose content is still that pointer."""
    import fnmatch

    from ..core import pointer as ptr
    from ..git.pointers import pointer_blobs
    from ..git.repo import git

    out = git("ls-files", "-s", "-z", cwd=repo.worktree)
    blobs = []
    for item in out.split("\0"):
        if not item:
            continue
        meta, _, path = item.partition("\t")
        oid = meta.split()[1]
        if not include or any(fnmatch.fnmatch(path, g) for g in include):
            blobs.append((oid, path))
    left = []
    for path, p in pointer_blobs(repo.worktree, blobs):
        f = repo.worktree / path
        try:
            with open(f, "rb") as fh:
                head = fh.read(len(ptr.MAGIC))
        except OSError:
            continue
        if head == ptr.MAGIC_BYTES:
            left.append((path, p))
    return left
