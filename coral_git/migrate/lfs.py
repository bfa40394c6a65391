"""git-lfs pointers and the local LFS object store (``.git/lfs/objects``), read and written as git-lfs does."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import CoralError
from ..git.repo import run_git

SPEC = b"version https://git-lfs.github.com/spec/v1\n"
MAX_LFS_POINTER = 1024  # git-lfs itself never treats a larger blob as a pointer
_OID = re.compile(rb"oid sha256:([0-9a-f]{64})\n")
_SIZE = re.compile(rb"size (0|[1-9][0-9]*)\n")


@dataclass(frozen=True)
class LfsPointer:
    oid: str
    size: int

    def encode(self) -> bytes:
        """The canonical pointer text, byte for byte what ``git lfs clean`` writes."""
        return SPEC + f"oid sha256:{self.oid}\nsize {self.size}\n".encode()


def parse(data: bytes) -> LfsPointer | None:
    """The LFS pointer ``data`` holds, or None (only the canonical three-line form, no extensions)."""
    if len(data) > MAX_LFS_POINTER or not data.startswith(SPEC):
        return None
    rest = data[len(SPEC) :]
    m = _OID.match(rest)
    if m is None:
        return None
    s = _SIZE.fullmatch(rest[m.end() :])
    if s is None:
        return None
    return LfsPointer(m.group(1).decode(), int(s.group(1)))


def lfs_dir(common_dir: Path) -> Path:
    """Where git-lfs keeps its objects (``lfs.storage`` is not supported: the default place)."""
    return common_dir / "lfs" / "objects"


def object_path(common_dir: Path, oid: str) -> Path:
    return lfs_dir(common_dir) / oid[:2] / oid[2:4] / oid


def sha256_file(path: Path, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(block):
            h.update(b)
    return h.hexdigest()


class LfsObjectMissing(CoralError):
    """An LFS object a pointer names is neither local nor downloadable."""


def ensure_object(common_dir: Path, worktree: Path | None, p: LfsPointer, path: str) -> Path:
    """The local file of ``p``, downloading it through the installed git-lfs if it is not there; verified."""
    obj = object_path(common_dir, p.oid)
    if not obj.exists():
        try:
            run_git(["lfs", "smudge", "--", path], worktree or common_dir, input=p.encode(), stdout=subprocess.DEVNULL)
        except FileNotFoundError:
            pass
    if not obj.exists():
        raise LfsObjectMissing(
            f"the git-lfs object of {path} ({p.oid[:12]}, {p.size} bytes) is not in .git/lfs/objects and "
            "git-lfs could not download it; run 'git lfs fetch --all' and retry"
        )
    if obj.stat().st_size != p.size or sha256_file(obj) != p.oid:
        raise LfsObjectMissing(
            f"the git-lfs object of {path} ({p.oid[:12]}) in .git/lfs/objects is damaged; "
            "delete it, run 'git lfs fetch --all' and retry"
        )
    return obj


def store_object(common_dir: Path, tmp: Path, oid: str) -> Path:
    """Move the finished file ``tmp`` (whose sha256 is ``oid``) into the LFS object store."""
    obj = object_path(common_dir, oid)
    if obj.exists():
        tmp.unlink()
        return obj
    obj.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o644)
    os.replace(tmp, obj)
    return obj


def lfs_store_bytes(common_dir: Path) -> int:
    """Bytes of every object in ``.git/lfs/objects``."""
    root = lfs_dir(common_dir)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.exists() else 0
