"""``git coral gc --remote NAME``: clean a remote's chunk store, whichever kind it is.

- a path remote that is a git repository's store (``<bare>/coral``): that repository's own gc, with
  its own reachability and its own grace period setting (what ``git coral gc`` run inside it does);
- another directory store: the chunks the git remote's commits need (``remotegc.live_chunks``),
  swept by local gc's mark and repack;
- an S3 store: ``remotegc.gc_s3`` (packs deleted or repacked over the network);
- a Git LFS server: refused — hosts do not let a client delete LFS objects (docs/remote.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from ..ui import human_bytes


def gc_remote(repo, name: str, prune: str | None, dry_run: bool, report: Callable) -> None:
    from ..maintenance.gc import configured_expire, parse_expire
    from ..remote.backends import PathRemote, resolve
    from ..remote.s3 import S3Remote

    store = resolve(repo, name)
    if isinstance(store, PathRemote):
        git_dir = _repo_of_store(store.root)
        if git_dir is not None:
            from ..git.repo import find_repo
            from ..maintenance.gc import gc

            there = find_repo(git_dir, bare_ok=True)
            expire = parse_expire(prune if prune is not None else configured_expire(there))
            res = gc(there, expire=expire, dry_run=dry_run)
            report(res, dry_run, f"gc --remote {name} ({git_dir})")
            return
        expire = parse_expire(prune if prune is not None else configured_expire(repo))
        report(_gc_dir(repo, name, store.root, expire, dry_run), dry_run, f"gc --remote {name} ({store.root})")
        return
    if isinstance(store, S3Remote):
        from ..remote.remotegc import gc_s3, live_chunks

        expire = parse_expire(prune if prune is not None else configured_expire(repo))
        live = live_chunks(repo.worktree or repo.git_dir, name)
        res = gc_s3(store, live, expire, dry_run=dry_run)
        _report_s3(name, store, res, dry_run)
        return
    raise UsageError(
        f"{store.describe()} is a Git LFS server: clients cannot delete LFS objects there; "
        "see docs/remote.md for what each host allows ('git coral gc --remote' cleans path and S3 stores)"
    )


def _repo_of_store(root: Path) -> Path | None:
    """The git directory whose store ``root`` is (``<bare>/coral`` or ``<repo>/.git/coral``), or None."""
    parent = root.parent
    if root.name == "coral" and (parent / "HEAD").is_file() and (parent / "objects").is_dir():
        return parent
    return None


class _Live:
    """What maintenance.gc.mark asks of a reachability walk: the chunk ids it found."""

    def __init__(self, ids: set[str]) -> None:
        self.ids = ids

    def chunk_ids(self) -> set[str]:
        return self.ids


def _gc_dir(repo, name: str, root: Path, expire: float, dry_run: bool):
    """A directory store that is no repository: local gc's sweep, with the git remote's reachability."""
    from ..maintenance.gc import GcResult, mark
    from ..remote.remotegc import live_chunks
    from ..store import packs
    from ..store.chunkstore import ChunkStore

    if not root.is_dir():
        raise UsageError(f"the chunk store of remote '{name}' ({root}) does not exist; nothing to clean")
    live = live_chunks(repo.worktree or repo.git_dir, name)
    store = ChunkStore(root)
    src = packs.attach(store)
    res = GcResult()
    with store.lock():
        src.rescan(force=True)
        inv = packs.inventory(store, src)
        res.objects_before = len(inv)
        res.files_before, res.bytes_before = packs.store_files(store, src)
        keep, res.young, res.missing, _ = mark(store, _Live(live), inv, expire, rebase=False)
        res.reachable = len(live)
        res.kept = len(keep & inv.keys())
        garbage = {c for c in inv if c not in keep}
        res.removed = sorted((c, inv[c].size) for c in garbage)
        res.objects_after = res.objects_before - len(garbage)
        if dry_run:
            res.files_after, res.bytes_after = res.files_before, res.bytes_before
            return res
        res.repack = packs.repack(store, drop=garbage, loose=True)
        res.files_after, res.bytes_after = packs.store_files(store, src)
    return res


def _report_s3(name: str, store, res, dry_run: bool) -> None:
    if res.missing:
        print(f"warning: {len(res.missing)} chunk(s) that the remote's history needs are missing from "
              f"{store.describe()}; push from a repository that has them", file=sys.stderr)
    if dry_run:
        for oid in res.deleted_packs:
            print(f"would delete pack {oid}")
        for oid in res.repacked:
            print(f"would repack pack {oid}")
    verb = "would delete" if dry_run else "deleted"
    print(f"gc --remote {name}: {verb} {len(res.deleted_packs)} pack(s), "
          f"{'would repack' if dry_run else 'repacked'} {len(res.repacked)}"
          + (f" into {res.packs_written}" if res.packs_written else "")
          + f", {verb} {res.loose_deleted} loose object(s): {res.removed_objects} object(s), "
          f"{human_bytes(res.removed_bytes)} unreferenced; kept {res.kept} "
          f"({res.young_packs} pack(s) kept whole for the grace period); "
          f"store {res.packs_before} → {res.packs_after} packs, "
          f"{human_bytes(res.bytes_before)} → {human_bytes(res.bytes_after)}", file=sys.stderr)
