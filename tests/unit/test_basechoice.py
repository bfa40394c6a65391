"""Base choice units: the recent-version table, trial windows, and the trial itself on a real store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from coral_git.store.basechoice import SAMPLES, WINDOW, BaseChoice, Pick, choose, sample_windows
from coral_git.store.chunkstore import ChunkStore, chunk_id
from coral_git.store.recent import RecentTensors


def test_recent_keeps_newest_first_and_reads_the_older_form(tmp_path: Path) -> None:
    r = RecentTensors(tmp_path, keep=3)
    sig = ("w", "F32", (4, 4), 1024)
    assert r.get(*sig) is None and r.get_all(*sig) == []
    for k in range(5):
        r.set(*sig, [f"{k:032x}", f"{k + 10:032x}"])
    r.set(*sig, [f"{3:032x}", f"{13:032x}"])  # re-adding a kept version moves it to the front, once
    assert [v[0][-1] for v in r.get_all(*sig)] == ["3", "4", "2"]
    assert r.get(*sig) == [f"{3:032x}", f"{13:032x}"]
    assert len(RecentTensors(tmp_path, limit=1).get_all(*sig)) == 1
    old = ("v", "F32", (4, 4), 1024)  # a signature only the older form (a file per signature) knows
    r._path(*old).parent.mkdir(parents=True, exist_ok=True)
    r._path(*old).write_text("a" * 32 + "," + "b" * 32)  # one line, no newline
    assert RecentTensors(tmp_path).get_all(*old) == [["a" * 32, "b" * 32]]  # (a table looks for them once)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["log"]  # one file for every signature


def test_recent_log_survives_torn_records_compaction_and_other_writers(tmp_path: Path) -> None:
    from coral_git.store import recent as rmod

    a, b = RecentTensors(tmp_path), RecentTensors(tmp_path)
    sig = ("w", "F32", (4,), 64)
    a.set(*sig, ["1" * 32])
    assert b.get(*sig) == ["1" * 32]  # another process's table sees the append
    with open(tmp_path / "log", "ab") as f:  # a crash in the middle of a record
        f.write(b"\n" + RecentTensors.key(*sig).encode() + b" " + b"2" * 20)
    assert b.get(*sig) == ["1" * 32]
    a.set(*sig, ["3" * 32, "4" * 32])  # the next add's record is intact; the torn one is skipped
    assert b.get_all(*sig) == [["3" * 32, "4" * 32], ["1" * 32]]
    old = rmod.COMPACT_OVER
    rmod.COMPACT_OVER = 1000
    try:
        for k in range(60):  # many versions of one signature: the log is rewritten with the kept ones
            a.set_many([(sig, [f"{k:032x}"]), (("x", "F32", (4,), 64), [f"{k + 100:032x}"])])
    finally:
        rmod.COMPACT_OVER = old
    assert (tmp_path / "log").stat().st_size < 2000
    assert b.get_all(*sig) == [[f"{k:032x}"] for k in (59, 58, 57, 56)]
    assert RecentTensors(tmp_path).get(("x", "F32", (4,), 64)[0], "F32", (4,), 64) == [f"{159:032x}"]


def test_sample_windows_are_aligned_and_bounded() -> None:
    assert sample_windows(1000, 4) == [(0, 1000)]
    wins = sample_windows(1 << 20, 4)
    assert len(wins) == SAMPLES
    for s, e in wins:
        assert s % 4 == 0 and e - s == WINDOW and 0 <= s and e <= 1 << 20
    assert wins[0][1] <= wins[1][0]


def _chunk(seed: int, n: int = 1 << 16) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32).view(np.uint8)


def _ft(raw: np.ndarray, seed: int) -> np.ndarray:
    v = raw.view(np.float32)
    noise = np.random.default_rng(seed).standard_normal(v.size).astype(np.float32) * 1e-3
    return (v * (1 + noise)).astype(np.float32).view(np.uint8)


def test_trial_picks_the_smaller_candidate_and_a_keyframe_over_unrelated_bases(tmp_path: Path) -> None:
    store = ChunkStore(tmp_path / "store")
    a, b = _chunk(1), _chunk(2)
    ida, idb = chunk_id(a), chunk_id(b)
    store.put(a, 4)
    store.put(b, 4)
    raw = _ft(a, 3)
    choice = BaseChoice([[idb], [ida]])
    assert choice.base(store, 0, raw, 4) == ida
    assert choice.sizes[1] < choice.sizes[0]
    assert choice.base(store, 0, raw, 4) == ida  # decided once
    alone = BaseChoice([[idb]])
    assert alone.base(store, 0, raw, 4) is None  # B's delta loses to a keyframe
    assert alone.keyframe_size <= alone.sizes[0]
    missing = BaseChoice([["0" * 32], [ida]])  # a candidate not in the store is skipped
    assert missing.base(store, 0, raw, 4) == ida and missing.sizes[0] == float("inf")
    # stored through the chosen base: a delta on A, and the bytes come back exactly
    cid = chunk_id(raw)
    assert store.put(raw, 4, choice.base(store, 0, raw, 4), cid=cid)
    assert store.header(cid).base == ida
    assert bytes(store.get(cid)) == raw.tobytes()


def test_choose_dedups_and_drops_wrong_lengths() -> None:
    assert choose([], 2) == [None, None]
    assert choose([["x"]], 2) == [None, None]
    bases = choose([["a", "b"], ["a", "b"], ["c", "d"], ["e"]], 2)
    assert all(isinstance(p, Pick) for p in bases)
    assert bases[0].choice is bases[1].choice and bases[1].index == 1
    assert bases[0].choice.candidates == [("a", "b"), ("c", "d")]
