"""``git coral checkpoints``: the checkpoints on a branch with their epoch, step and metrics."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def checkpoints(
        branch: Annotated[str, typer.Option("--branch", "-b", help="Branch the checkpoints were committed to.")] = "checkpoints",
        metric: Annotated[str | None, typer.Option("--metric", "-m", help="Sort best first by this metric.")] = None,
        mode: Annotated[str | None, typer.Option("--mode", help="'min' or 'max' (default: from the run's Coral-Monitor trailer, else from the name).")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="One JSON array on stdout.")] = False,
        limit: Annotated[int, typer.Option("--limit", "-n", help="Show at most N rows (0: all).")] = 0,
    ) -> None:
        """List checkpoint commits (newest first, or best first with --metric), read from their git trailers."""
        from ..errors import UsageError
        from ..integrations.checkpoints import guess_mode, list_checkpoints, open_repo

        if mode is not None and mode not in ("min", "max"):
            raise UsageError(f"--mode must be 'min' or 'max', not {mode!r}")
        open_repo(None)
        rows = list_checkpoints(None, branch=branch, metric=metric, mode=mode)
        if limit > 0:
            rows = rows[:limit]
        if as_json:
            print(json.dumps([r.as_dict() for r in rows], indent=1))
            return
        if not rows:
            print(f"no checkpoints on branch '{branch}'", file=__import__("sys").stderr)
            return
        names: list[str] = []
        for r in rows:
            names.extend(k for k in r.metrics if k not in names)
        if metric is not None and metric in names:
            names.remove(metric)
            names.insert(0, metric)
        head = ["commit", "epoch", "step", *names, "tags"]
        table = [head]
        for r in rows:
            cells = [r.commit[:12], _cell(r.epoch), _cell(r.step)]
            cells += [_cell(r.metrics.get(n)) for n in names]
            cells.append(",".join(r.tags))
            table.append(cells)
        widths = [max(len(row[i]) for row in table) for i in range(len(head))]
        if metric is not None:
            print(f"# best first by {metric} ({mode or guess_mode(metric, rows)})")
        for row in table:
            print("  ".join(c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())


def _cell(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
