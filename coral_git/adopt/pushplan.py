"""``git coral push --dry-run``: what the remote's chunk store lacks, per file, before anything moves."""

from __future__ import annotations

import os
from typing import Any


def plan(repo, remote, ids: list[str], where: dict[str, str]) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    have = remote.has_many(ids)
    missing = [c for c in ids if c not in have]
    per: dict[str, dict[str, int]] = {}
    total = 0
    for c in missing:
        try:
            size = os.path.getsize(repo.store.loose.path(c))
        except OSError:
            data = repo.store.read_object_local(c)
            size = len(data) if data is not None else 0
        total += size
        f = per.setdefault(where[c], {"chunks": 0, "bytes": 0})
        f["chunks"] += 1
        f["bytes"] += size
    return {
        "remote": remote.name,
        "store": remote.describe(),
        "needed_chunks": len(ids),
        "missing_chunks": len(missing),
        "missing_bytes": total,
        "files": [{"path": p, **v} for p, v in sorted(per.items())],
    }
