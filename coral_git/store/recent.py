"""Recently stored tensors by (name, dtype, shape): delta base candidates for a file at a new path."""

from __future__ import annotations

from pathlib import Path

import xxhash

from .objects import write_atomic

KEEP = 4  # versions kept per signature: enough candidates to find a common base, few enough to try them all


class RecentTensors:
    """A small table ``signature → chunk ids of the last KEEP versions stored`` (newest first), one
    file per signature: one line per version, ids comma-separated (a one-line file is the older form)."""

    def __init__(self, root: Path, keep: int = KEEP, limit: int = KEEP) -> None:
        self.root = root
        self.keep = keep  # versions written
        self.limit = limit  # versions read back as candidates

    def _path(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> Path:
        key = xxhash.xxh3_64_hexdigest(f"{name}\0{dtype}\0{shape}\0{chunk_bytes}".encode())
        return self.root / key[:2] / key[2:]

    def get_all(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[list[str]]:
        """The versions kept (at most ``limit``), newest first."""
        return self._read(name, dtype, shape, chunk_bytes)[: self.limit]

    def _read(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[list[str]]:
        try:
            text = self._path(name, dtype, shape, chunk_bytes).read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return []
        return [line.split(",") for line in text.splitlines() if line]

    def get(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[str] | None:
        """The newest version kept, or None."""
        versions = self.get_all(name, dtype, shape, chunk_bytes)
        return versions[0] if versions else None

    def set(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int, ids: list[str]) -> None:
        """Record ``ids`` as the newest version (a lost race between two adds only loses a hint)."""
        versions = [ids] + [v for v in self._read(name, dtype, shape, chunk_bytes) if v != ids]
        text = "\n".join(",".join(v) for v in versions[: self.keep])
        write_atomic(self._path(name, dtype, shape, chunk_bytes), text.encode())
