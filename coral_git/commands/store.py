"""gc, stats, fsck and repack: the store's lifecycle."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from ..errors import UsageError
from ..ui import human_bytes, progress


@contextmanager
def _progress() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar on stderr, shown only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda phase, done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    tasks: dict[str, int] = {}
    with progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total or None)
            bar.update(tasks[phase], completed=done, total=total or None)

        yield update


def _signed(n: float) -> str:
    """A saving; a negative one is a cost and says so."""
    return human_bytes(n) if n >= 0 else f"{human_bytes(-n)} cost"


def _report_gc(res, dry_run: bool, prefix: str = "gc") -> None:
    """gc's warnings and its one summary line (stderr), or the dry run's list (stdout)."""
    for blob, why in sorted(res.broken_pointers.items()):
        print(f"warning: blob {blob} looks like a pointer but does not parse ({why})", file=sys.stderr)
    if res.missing:
        print(f"warning: {len(res.missing)} chunk(s) that history needs are missing; run 'git coral fsck'", file=sys.stderr)
    if dry_run:
        for cid, n in res.removed:
            print(f"would remove {cid} {n}")
        print(f"would remove {len(res.removed)} object(s), {human_bytes(res.removed_bytes)}; "
              f"keep {res.kept} ({res.young} only for the grace period)")
        return
    msg = (f"{prefix}: removed {len(res.removed)} object(s) ({human_bytes(res.removed_bytes)}), kept {res.kept}; "
           f"store {res.files_before} → {res.files_after} files, {human_bytes(res.bytes_before)} → {human_bytes(res.bytes_after)}")
    if res.repack and res.repack.packed:
        msg += f"; packed {res.repack.packed} object(s)"
    if res.rechosen and res.rechosen.reencoded:
        msg += "; " + _rechosen_text(res.rechosen)
    if res.tmp_removed:
        msg += f"; removed {res.tmp_removed} stale temp file(s)"
    print(msg, file=sys.stderr)
    if res.rechoose_skipped:
        print(f"warning: {res.rechoose_skipped}; bases were left as they were", file=sys.stderr)


def _rechosen_text(r) -> str:
    return (f"re-chose delta bases of {r.rechosen} chunk position(s) ({r.reencoded} object(s) re-encoded, "
            f"{r.keyframes} keyframe(s), longest chain {r.max_depth})")


def _auto_gc(repo, expire: float, dry_run: bool, pack: bool) -> None:
    """``gc --auto``: gc only when the loose objects pass the thresholds, one gc at a time."""
    import os

    from ..git import autogc
    from ..maintenance.gc import gc

    if os.environ.get(autogc.CHILD_ENV):
        try:
            os.nice(10)  # started by an add: yield the CPU to the work in the foreground
        except OSError:
            pass
    needed, why = autogc.check(repo)
    if not needed:
        print(f"gc --auto: nothing to do: {why}", file=sys.stderr)
        return
    with autogc.gc_lock(repo.store_root) as holder:
        if holder is not None:
            print(f"gc --auto: another gc is running (pid {holder}); skipped", file=sys.stderr)
            return
        for _ in range(autogc.MAX_ROUNDS):  # adds that ran meanwhile started no gc (this one held the lock)
            print(f"gc --auto: {why}", file=sys.stderr)
            res = gc(repo, expire=expire, dry_run=dry_run, pack=pack, rechoose="auto")
            _report_gc(res, dry_run, "gc --auto")
            needed, why = autogc.check(repo)
            if dry_run or not needed:
                break


def register(app: typer.Typer) -> None:
    @app.command()
    def gc(
        dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="Print what would be removed; change nothing.")] = False,
        prune: Annotated[str | None, typer.Option("--prune", help="Remove unreferenced objects older than DATE ('now', '2.weeks.ago', an ISO date). Default: coral.pruneExpire, gc.pruneExpire, or 2 weeks.")] = None,
        no_pack: Annotated[bool, typer.Option("--no-pack", help="Do not gather loose objects into packs.")] = False,
        auto: Annotated[bool, typer.Option("--auto", help="Only when loose objects pass coral.gc.auto / coral.gc.autoBytes (what adds start in the background); say why not otherwise.")] = False,
        remote: Annotated[str | None, typer.Option("--remote", metavar="NAME", help="Clean the chunk store of git remote NAME (a path or S3 store) instead of the local one: delete packs nothing reachable needs, repack mostly dead ones.")] = None,
    ) -> None:
        """Remove chunks nothing references any more, and pack loose objects."""
        from ..git.repo import find_repo
        from ..maintenance.gc import configured_expire, gc, parse_expire

        repo = find_repo(bare_ok=True)
        if remote is not None:
            if auto or no_pack:
                raise UsageError("--remote cannot be combined with --auto or --no-pack")
            from .remotegc import gc_remote

            gc_remote(repo, remote, prune, dry_run, _report_gc)
            return
        expire = parse_expire(prune if prune is not None else configured_expire(repo))
        if auto:
            _auto_gc(repo, expire, dry_run, not no_pack)
            return
        with _progress() as progress:
            res = gc(repo, expire=expire, dry_run=dry_run, pack=not no_pack, progress=progress)
        _report_gc(res, dry_run)

    @app.command()
    def repack(
        full: Annotated[bool, typer.Option("--all", "-a", help="Rewrite every pack into new ones, not only loose objects.")] = False,
        max_chain: Annotated[int | None, typer.Option("--max-chain", help="Longest delta chain: any version decodes in at most this many steps + 1 (default: coral.maxChain).")] = None,
        force: Annotated[bool, typer.Option("--force", "-f", help="Re-choose the bases of every chunk position, also those already in shape.")] = False,
        keep_bases: Annotated[bool, typer.Option("--keep-bases", help="Only gather objects into packs; keep every delta base (no history walk).")] = False,
        window: Annotated[int, typer.Option("--window", help="Versions of a chunk position tried as its base.")] = 4,
    ) -> None:
        """Gather loose objects into packs and re-choose delta bases over the reachable versions of each chunk."""
        from ..git.repo import find_repo
        from ..store import packs

        repo = find_repo(bare_ok=True)
        store = repo.store
        if max_chain is not None and max_chain < 0:
            raise UsageError("--max-chain must be 0 or more")
        if window < 1:
            raise UsageError("--window must be 1 or more")
        depth = store.max_chain if max_chain is None else max_chain
        with _progress() as progress:
            walked = None
            if not keep_bases:
                from ..git import reachability

                walked = reachability.walk(repo.common_dir, progress)
            with store.lock():
                res = packs.repack(store, full=full and keep_bases, max_chain=depth,
                                   on_item=lambda k, n: progress("packing", k, n))
                rechosen = None
                if walked is not None:
                    from ..maintenance.rebase import rechoose

                    rechosen = rechoose(store, walked[0], walked[1], depth=depth, window=window, force=force,
                                        progress=progress)
        print(f"repack: {res.packed} object(s) into {res.packs_written} pack(s), removed {res.loose_removed} "
              f"loose file(s) and {res.packs_removed} old pack(s)"
              + (f", re-encoded {res.rekeyed} as keyframes" if res.rekeyed else "")
              + (f"; {_rechosen_text(rechosen)}" if rechosen and rechosen.reencoded else ""), file=sys.stderr)

    @app.command()
    def fsck(
        no_move: Annotated[bool, typer.Option("--no-move", help="Only report; leave damaged objects where they are.")] = False,
        full: Annotated[bool, typer.Option("--full", help="Also rebuild every reachable file and check it against its pointer's file id.")] = False,
    ) -> None:
        """Check every reachable pointer and every stored object; exit non-zero on any problem."""
        from ..git.repo import find_repo
        from ..maintenance.fsck import fsck

        with _progress() as progress:
            res = fsck(find_repo(bare_ok=True), move=not no_move, full=full, progress=progress)
        for p in res.problems:
            label = "warning" if p.warning else p.kind
            print(f"{label} {p.what}: {p.detail}" + (f" (moved to {p.moved_to})" if p.moved_to else ""))
            for rev, path, part in p.needed_by[:8]:
                print(f"  needed by {path} ({part}) at {rev}")
            if len(p.needed_by) > 8:
                print(f"  ... and {len(p.needed_by) - 8} more")
        n = len(res.errors)
        print(f"fsck: checked {res.objects} object(s), {res.pointers} pointer(s) in {res.commits} commit(s): "
              + (f"{n} problem(s)" if n else "ok"), file=sys.stderr)
        if n:
            raise typer.Exit(1)

    @app.command()
    def stats(
        json_: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
        by: Annotated[str | None, typer.Option("--by", help="Break the figures down by 'file' or 'commit'.")] = None,
    ) -> None:
        """Logical vs stored bytes, savings from dedup, delta and compression, and a git-lfs comparison."""
        from ..git.repo import find_repo
        from ..maintenance.stats import stats

        if by not in (None, "file", "commit"):
            raise UsageError("--by takes 'file' or 'commit'")
        with _progress() as progress:
            s = stats(find_repo(bare_ok=True), by=by, progress=progress)
        if json_:
            import json

            print(json.dumps(s.to_json(), indent=2))
            return
        lines = [
            ("commits", f"{s.commits}"),
            ("tracked files", f"{s.files} paths, {s.file_versions} versions ({s.unique_files} unique contents)"),
            ("logical bytes", f"{human_bytes(s.logical_bytes)} ({s.logical_bytes})"),
            ("git-lfs would store", f"{human_bytes(s.lfs_bytes)} ({s.lfs_bytes})"),
            ("unique chunks", f"{s.chunks} ({human_bytes(s.unique_chunk_bytes)} raw)"),
            ("stored bytes", f"{human_bytes(s.stored_bytes)} ({s.stored_bytes}) needed by history"),
            ("on disk", f"{human_bytes(s.disk_bytes)} in {s.disk_files} files ({s.objects} objects: {s.loose_objects} loose, {s.packs} packs)"),
            ("ratio", f"{s.ratio:.2f}x vs logical, {s.lfs_ratio:.2f}x vs git-lfs" if s.ratio else
             f"unknown: {s.missing_chunks} chunk(s) missing" if s.missing_chunks else "-"),
            ("saved by dedup", human_bytes(s.dedup_saved)),
            ("saved by delta", f"{_signed(s.delta_saved)} (estimate)"),
            ("saved by compression", f"{_signed(s.compression_saved)} (estimate)"),
            ("objects", f"{s.keyframes} keyframes, {s.deltas} deltas, {s.unreachable_objects} unreachable"),
            ("longest delta chain", f"{s.longest_chain}"),
        ]
        if s.base_overhead:
            lines.append(("kept as delta bases", f"{human_bytes(s.base_overhead)} (objects history names only as bases)"))
        if s.missing_chunks:
            lines.append(("missing chunks", f"{s.missing_chunks}, {human_bytes(s.missing_bytes)} raw: not in this store; "
                          "run 'git coral fetch' if a remote has them, or 'git coral fsck'"))
        for k, v in lines:
            print(f"{k + ':':<22} {v}")
        if s.rows:
            print()
            head = "file" if by == "file" else "commit"
            print(f"{head:<40} {'versions':>8} {'logical':>11} {'new chunks':>10} {'stored':>11}")
            for r in s.rows:
                name = r.name if by == "file" else f"{r.name[:12]} {r.subject}"
                print(f"{name[:40]:<40} {r.versions:>8} {human_bytes(r.logical_bytes):>11} {r.new_chunks:>10} {human_bytes(r.stored_bytes):>11}")
