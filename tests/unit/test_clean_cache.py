"""The clean cache's file: records round-trip, a stat change or another chunk size misses, junk is ignored."""

from __future__ import annotations

import os
from pathlib import Path

from coral_git.core import pointer as ptr
from coral_git.filter.fresh import CACHE_ENTRIES, CACHE_FILE, CleanCache


def pointer(size: int, chunk: int = 1 << 20) -> bytes:
    return ptr.Pointer(size, "opaque", "ab" * 16, chunk, size, ("cd" * 16,), ()).encode()


def test_records_round_trip_and_stat_data_decides(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"x" * 100)
    c = CleanCache(tmp_path, tmp_path, 1 << 20)
    key = c.stat_key("m.bin")
    assert key is not None and key.startswith("100 ")
    c.record("m.bin", key, pointer(100))
    assert c.lookup("m.bin", key, lambda: 1 << 20) is not None  # this session's own record
    c.save()
    d = CleanCache(tmp_path, tmp_path, 1 << 20)
    assert d.lookup("m.bin", key, lambda: 1 << 20) == ptr.parse(pointer(100))
    assert d.lookup("m.bin", key, lambda: 1 << 16) is None  # another chunk size
    assert d.lookup("other", key, lambda: 1 << 20) is None
    os.utime(tmp_path / "m.bin", ns=(1, 1))
    assert d.lookup("m.bin", d.stat_key("m.bin"), lambda: 1 << 20) is None


def test_large_files_are_not_recorded_and_the_file_stays_bounded(tmp_path: Path) -> None:
    c = CleanCache(tmp_path, tmp_path, 1000)
    c.record("big", "2000 1 1 1 1", pointer(2000))
    for i in range(CACHE_ENTRIES + 10):
        c.record(f"f{i}", f"{i} 1 1 1 1", pointer(i + 1))
    c.save()
    d = CleanCache(tmp_path, tmp_path, 1000)
    assert d.lookup("big", "2000 1 1 1 1", lambda: 1 << 20) is None
    assert d.lookup("f9", "9 1 1 1 1", lambda: 1 << 20) is None  # the oldest went
    last = CACHE_ENTRIES + 9
    assert d.lookup(f"f{last}", f"{last} 1 1 1 1", lambda: 1 << 20) is not None


def test_a_damaged_or_foreign_file_is_ignored(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE).write_bytes(b"coral-clean-cache 0\0m\0x\0y\0")
    assert CleanCache(tmp_path, tmp_path, 1 << 20).lookup("m", "x", lambda: 1 << 20) is None
    (tmp_path / CACHE_FILE).write_bytes(os.urandom(64))
    c = CleanCache(tmp_path, tmp_path, 1 << 20)
    assert c.lookup("m", "x", lambda: 1 << 20) is None
    c.record("m", "1 1 1 1 1", pointer(1))
    c.save()  # replaces the junk
    assert CleanCache(tmp_path, tmp_path, 1 << 20).lookup("m", "1 1 1 1 1", lambda: 1 << 20) is not None
