"""``git coral env``: versions, where things are, and every coral setting with the place it comes from."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from ..core.chunking import DEFAULT_CHUNK_BYTES
from ..errors import CoralError
from ..git.install import CONFIG
from ..git.repo import find_repo, git, run_git
from ..remote.push import DEFAULT_REMOTE_CHAIN
from ..store.chunkstore import DEFAULT_MAX_CHAIN

# key, environment variable that overrides it, default
SETTINGS: list[tuple[str, str | None, str]] = [
    ("coral.chunkSize", "CORAL_CHUNKSIZE", str(DEFAULT_CHUNK_BYTES)),
    ("coral.workers", "CORAL_WORKERS", str(min(4, os.cpu_count() or 1))),
    ("coral.maxChain", "CORAL_MAXCHAIN", str(DEFAULT_MAX_CHAIN)),
    ("coral.zstdLevel", "CORAL_ZSTDLEVEL", "1"),
    ("coral.remoteMaxChain", "CORAL_REMOTEMAXCHAIN", str(DEFAULT_REMOTE_CHAIN)),
    ("coral.pushEncoding", "CORAL_PUSH_ENCODING", "reencode"),
    ("coral.pushRemote", None, "(upstream or origin)"),
    ("coral.fetchRemote", None, "(upstream or origin)"),
    ("coral.fetchInclude", None, "(everything)"),
    ("coral.fetchExclude", None, "(nothing)"),
    ("coral.fetchRecentRefsDays", None, "7"),
]


def _run(args: list[str], cwd: Path | None = None) -> str | None:
    """git's answer (``args`` start with "git"), or None when git fails or is missing."""
    try:
        proc = run_git(args[1:], cwd)
    except FileNotFoundError:
        return None
    return proc.stdout.decode(errors="replace").strip() if proc.returncode == 0 else None


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def versions() -> dict[str, str]:
    out = {"coral-git": _version("coral-git"), "git": (_run(["git", "--version"]) or "?").removeprefix("git version ")}
    out["git-lfs"] = (_run(["git", "lfs", "version"]) or "(not installed)").split(" (")[0].removeprefix("git-lfs/")
    out["python"] = platform.python_version()
    for pkg in ("numpy", "zarr", "numcodecs", "pygit2", "xxhash", "safetensors", "typer"):
        out[pkg] = _version(pkg)
    return out


def setting(key: str, env: str | None, default: str, cwd: Path | None, worktree: Path | None) -> dict[str, str]:
    """The value in effect and its source: environment, git config (scope and file), .coralconfig, default."""
    if env and os.environ.get(env):
        return {"key": key, "value": os.environ[env], "source": f"environment {env}"}
    out = _run(["git", "config", "--show-scope", "--show-origin", "--get", key], cwd)
    if out:
        scope, origin, value = out.split("\t", 2) if out.count("\t") >= 2 else ("", "", out)
        return {"key": key, "value": value, "source": f"git config --{scope} ({origin})"}
    if worktree is not None and (worktree / ".coralconfig").is_file():
        value = _run(["git", "config", "--file", str(worktree / ".coralconfig"), "--get", key], cwd)
        if value:
            return {"key": key, "value": value, "source": ".coralconfig"}
    return {"key": key, "value": default, "source": "default"}


def environment() -> dict[str, Any]:
    from ..migrate.lfs import lfs_store_bytes
    from ..remote.backends import resolve
    from ..store.packs import store_files

    e: dict[str, Any] = {"versions": versions()}
    try:
        repo = find_repo()
    except CoralError:
        repo = None
    cwd = repo.worktree or repo.git_dir if repo else None
    if repo is not None:
        n, size = store_files(repo.store) if repo.store_root.exists() else (0, 0)
        e["repository"] = {
            "git_dir": str(repo.git_dir),
            "worktree": str(repo.worktree) if repo.worktree else None,
            "store": str(repo.store_root),
            "store_objects": n,
            "store_bytes": size,
            "lfs_objects_bytes": lfs_store_bytes(repo.common_dir),
        }
        remotes = []
        for name in git("remote", cwd=cwd).split():
            try:
                store = resolve(repo, name).describe()
            except CoralError as exc:
                store = f"(none: {exc})"
            remotes.append({"name": name, "url": git("config", f"remote.{name}.url", cwd=cwd, check=False), "store": store})
        e["remotes"] = remotes
    else:
        e["repository"] = {}
        e["remotes"] = []
    e["installed"] = {k: _run(["git", "config", "--get", k], cwd) for k in CONFIG}
    e["settings"] = [setting(k, env, d, cwd, repo.worktree if repo else None) for k, env, d in SETTINGS]
    return e
