"""diff, show, log (per-tensor views of history) and git's hidden diff-driver/textconv entry points."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..errors import UsageError
from ..ui import busy, fmt_num, fmt_pct, human_bytes, paint


def _split_revs_paths(args: list[str], cwd: str | None = None) -> tuple[list[str], list[str]]:
    """Split ``[REV [REV]] [--] [PATH…]`` like git: ``--`` if given, else leading args that are revisions."""
    from ..git.repo import git

    argv = sys.argv[1:]
    if "--" in argv:
        n_paths = len(argv) - argv.index("--") - 1
        revs, paths = args[: len(args) - n_paths], args[len(args) - n_paths :]
    else:
        revs, paths = [], []
        for a in args:
            if not paths and len(revs) < 2 and ("..." not in a) and _is_rev(a, git, cwd):
                revs.append(a)
            else:
                if not os.path.lexists(os.path.join(cwd or ".", a)) and not any(c in a for c in "*?["):
                    # like git: without '--' an argument must be a revision or an existing path
                    raise UsageError(f"ambiguous argument {a!r}: unknown revision or path not in the working tree "
                                     "(use '--' to separate paths from revisions)")
                paths.append(a)
    if len(revs) == 1 and ".." in revs[0] and "..." not in revs[0]:
        a, b = revs[0].split("..", 1)
        revs = [a or "HEAD", b or "HEAD"]
    if len(revs) > 2:
        raise UsageError("give at most two revisions")
    return revs, paths


def _is_rev(arg: str, git, cwd: str | None) -> bool:  # type: ignore[no-untyped-def]
    if ".." in arg:
        return all(_is_rev(x or "HEAD", git, cwd) for x in arg.split("..", 1))
    return bool(git("rev-parse", "--verify", "--quiet", f"{arg}^{{commit}}", cwd=cwd, check=False))


def register(app: typer.Typer) -> None:
    @app.command("diff-driver", hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def diff_driver(ctx: typer.Context) -> None:
        """git's external diff command (diff.coral.command): path old-file old-hex old-mode new-file new-hex new-mode."""
        from ..diffs import driver as diffdriver

        raise typer.Exit(diffdriver.run(list(ctx.args)))

    @app.command("textconv", hidden=True)
    def textconv_cmd(path: str) -> None:
        """git's textconv (diff.coral.textconv): one line per tensor of PATH on stdout."""
        from ..diffs import textconv

        raise typer.Exit(textconv.run(path))

    @app.command()
    def diff(
        args: Annotated[list[str] | None, typer.Argument(metavar="[REV [REV]] [-- PATH…]", help="Like git diff: no REV = index vs work tree; one = REV vs work tree; two = REV vs REV.")] = None,
        cached: Annotated[bool, typer.Option("--cached", "--staged", help="Compare the index (instead of the work tree) with REV or HEAD.")] = False,
        tensor: Annotated[list[str] | None, typer.Option("--tensor", "-t", help="Only tensors whose name matches this glob (repeatable).")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print the records as JSON.")] = False,
        stat: Annotated[bool, typer.Option("--stat", help="Compact: one short line per changed tensor.")] = False,
        sort: Annotated[str | None, typer.Option("--sort", help="'change' (largest relative change first) or 'name'.")] = None,
        no_stats: Annotated[bool, typer.Option("--no-stats", help="Chunk-level comparison only: decode nothing.")] = False,
        color: Annotated[str, typer.Option("--color", help="auto, always or never.")] = "auto",
        html_out: Annotated[str | None, typer.Option("--html", help="Write a self-contained HTML page (bars, heatmap by layer) to this file.")] = None,
    ) -> None:
        """Per-tensor differences of model files (the table git diff shows), without git's diff machinery."""
        import json

        from ..api import model as api
        from ..diffs import driver as diffdriver
        from ..git.repo import find_repo

        repo = find_repo()
        revs, paths = _split_revs_paths(list(args or []), str(repo.worktree) if repo.worktree else None)
        style = diffdriver.style_from_env(repo)
        style.color = diffdriver.want_color(color)
        if stat:
            style.compact = True
        if sort is not None:
            if sort not in ("change", "name"):
                raise UsageError("--sort takes 'change' or 'name'")
            style.order = sort
        with busy("comparing model files"):
            fds = api.diff(
                *[*revs, None, None][:2], paths=paths, cached=cached, tensors=tensor, stats=not no_stats, order=style.order, repo=repo
            )
        if html_out is not None:
            from ..diffs.html import render_diff

            if len(revs) == 2:
                labels = list(revs)
            else:
                labels = [revs[0] if revs else ("HEAD" if cached else "index"), "index" if cached else "work tree"]
            with open(html_out, "w", encoding="utf-8") as f:
                f.write(render_diff(fds, labels[0], labels[1]))
            print(f"coral: wrote {html_out} ({sum(len(fd.tensors) for fd in fds)} changed tensor(s))", file=sys.stderr)
            return
        if json_:
            print(json.dumps([fd.as_dict() for fd in fds], indent=2))
            return
        for fd in fds:
            sys.stdout.write(diffdriver.render(fd, style))

    @app.command()
    def show(
        spec: Annotated[str, typer.Argument(metavar="REV:PATH", help="A file at a revision (':PATH' is the index; 'PATH' alone is HEAD).")],
        tensor: Annotated[str | None, typer.Option("--tensor", "-t", help="Show one tensor's values summary.")] = None,
        json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        no_stats: Annotated[bool, typer.Option("--no-stats", help="Do not decode: names, shapes and sizes only.")] = False,
    ) -> None:
        """The tensors of a model file at a revision: dtype, shape, size, stored size and statistics."""
        import json

        from ..api import model as api
        from ..git.repo import find_repo

        repo = find_repo()
        rev, _, path = spec.rpartition(":") if ":" in spec else ("HEAD", "", spec)
        with api.open(path, rev, repo=repo) as m:
            if tensor is not None:
                rec = api.tensor_summary(m, tensor)
                if json_:
                    print(json.dumps(rec, indent=2))
                    return
                for k, v in rec.items():
                    print(f"{k:<12} {v}")
                return
            with busy(f"reading {m.path}"):
                rows = api.tensor_table(m, stats=not no_stats)
            if json_:
                print(json.dumps({"path": m.path, "format": m.format, "size": m.pointer.size, "tensors": rows}, indent=2))
                return
            _print_table(m, rows)

    @app.command()
    def log(
        path: Annotated[str, typer.Argument(help="A model file.")],
        tensor: Annotated[list[str] | None, typer.Option("--tensor", "-t", help="Only tensors whose name matches this glob (repeatable).")] = None,
        stats: Annotated[bool | None, typer.Option("--stats/--no-stats", help="Decode changed tensors for ‖Δ‖ and relative change (default: on with --tensor).")] = None,
        max_count: Annotated[int | None, typer.Option("-n", "--max-count", help="At most N commits.")] = None,
        rev: Annotated[str, typer.Option("--rev", help="Start from this revision.")] = "HEAD",
        json_: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        html_out: Annotated[str | None, typer.Option("--html", help="Write a layer × commit heatmap of relative change (self-contained HTML) to this file.")] = None,
    ) -> None:
        """Per-tensor history of PATH: the commits in which tensors changed, and by how much."""
        import json

        from ..api import model as api
        from ..diffs import driver as diffdriver
        from ..git.repo import find_repo

        repo = find_repo()
        want_stats = bool(tensor) or html_out is not None if stats is None else stats
        if html_out is not None:
            from ..diffs.html import render_history

            with busy(f"walking the history of {path}"):
                entries = list(api.history(path, tensors=tensor, stats=want_stats, max_count=max_count, rev=rev, repo=repo))
            with open(html_out, "w", encoding="utf-8") as f:
                f.write(render_history(path, entries))
            print(f"coral: wrote {html_out} ({len(entries)} commit(s))", file=sys.stderr)
            return
        on = diffdriver.want_color(None)
        out = []
        for entry in api.history(path, tensors=tensor, stats=want_stats, max_count=max_count, rev=rev, repo=repo):
            if json_:
                out.append({**{k: v for k, v in entry.items() if k != "diff"}, "diff": entry["diff"].as_dict()})
                continue
            fd = entry["diff"]
            print(paint(f"commit {entry['commit']}", "33", on) + f"  {entry['date']}  {entry['subject']}")
            if fd.bytes is not None:
                print("    " + diffdriver.summary(fd))
            for t in fd.tensors:
                name, _ = diffdriver.describe(t)
                size = f"{human_bytes(t.bytes_changed)} new in {t.chunks_changed}/{t.chunks_total} chunks"
                if t.rel_change is not None:
                    size = f"‖Δ‖ {fmt_num(t.delta_norm)}  rel {fmt_num(t.rel_change, '.2e')}  changed {fmt_pct(t.frac_changed)}  " + size
                status = paint(f"{t.status:<9}", diffdriver.STATUS_COLORS.get(t.status, ""), on)
                print(f"    {status} {name}  {size}")
            if fd.bytes is None and not fd.tensors:
                print("    (no tensor changes" + ("; metadata changed)" if fd.metadata_changed else ")"))
        if json_:
            print(json.dumps(out, indent=2))


def _print_table(m, rows: list[dict]) -> None:  # type: ignore[no-untyped-def]

    print(f"{m.path}: {m.format}, {len(rows)} tensors, {m.pointer.size:,} bytes ({human_bytes(m.pointer.size)})")
    if not rows:
        return
    wn = min(72, max(len(r["name"]) for r in rows))
    ws = max(len(str(r["shape"])) for r in rows)
    print(f"  {'tensor':<{wn}} {'dtype':<6} {'shape':<{ws}} {'size':>10} {'stored':>10} {'mean':>10} {'std':>10} {'min':>10} {'max':>10}")
    for r in rows:
        st = r.get("stats") or {}

        def g(k: str, st: dict = st) -> str:
            v = st.get(k)
            return "-" if v is None else format(v, ".4g")

        print(
            f"  {r['name']:<{wn}} {r['dtype']:<6} {r['shape']!s:<{ws}} {human_bytes(r['nbytes']):>10} "
            f"{human_bytes(r['stored']) if r['stored'] is not None else '-':>10} {g('mean'):>10} {g('std'):>10} {g('min'):>10} {g('max'):>10}"
        )
    total = sum(r["nbytes"] for r in rows)
    stored = sum(r["stored"] or 0 for r in rows)
    print(f"  total {human_bytes(total)} of tensors, {human_bytes(stored)} stored for their chunks")
