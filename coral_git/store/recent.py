"""Recently stored tensors by (name, dtype, shape): the delta base for a file at a new path."""

from __future__ import annotations

from pathlib import Path

import xxhash

from .objects import write_atomic


class RecentTensors:
    """A small table ``signature → chunk ids of the last version stored``, one file per signature."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> Path:
        key = xxhash.xxh3_64_hexdigest(f"{name}\0{dtype}\0{shape}\0{chunk_bytes}".encode())
        return self.root / key[:2] / key[2:]

    def get(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int) -> list[str] | None:
        try:
            text = self._path(name, dtype, shape, chunk_bytes).read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return text.split(",") if text else None

    def set(self, name: str, dtype: str, shape: tuple[int, ...], chunk_bytes: int, ids: list[str]) -> None:
        write_atomic(self._path(name, dtype, shape, chunk_bytes), ",".join(ids).encode())
