"""Streaming clean gives exactly the pointer of the ordinary clean, for valid and broken safetensors files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_git.filter.clean import clean
from coral_git.filter.process import Spool
from coral_git.filter.smudge import smudge
from coral_git.filter.streamclean import StreamingClean
from coral_git.store.chunkstore import ChunkStore

CHUNK = 4096


@pytest.fixture(scope="module")
def streamed_log():
    """Whether each example of the property below streamed; checked once it has run all of them (in the
    same process, whichever xdist worker that is), so the property cannot silently exercise only the
    fallback, or never it."""
    log: list[bool] = []
    yield log
    assert log and sum(log) >= len(log) // 10 and not all(log), f"{sum(log)} of {len(log)} examples streamed"


def safetensors_bytes(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(1, 5))
    header: dict[str, object] = {}
    if draw(st.booleans()):
        header["__metadata__"] = {"k": "v" * draw(st.integers(0, 50))}
    pos = 0
    for i in range(n):
        pos += draw(st.sampled_from([0, 0, 3, 100]))  # gaps between tensors
        rows = draw(st.integers(0, 40))
        cols = draw(st.sampled_from([1, 7, 300, 1100]))
        dtype, size = draw(st.sampled_from([("F32", 4), ("BF16", 2), ("U8", 1), ("F64", 8)]))
        nbytes = rows * cols * size
        header[f"t{i}"] = {"dtype": dtype, "shape": [rows, cols], "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    text = json.dumps(header).encode() + b" " * draw(st.integers(0, 9))
    seed = draw(st.integers(0, 2**16))
    data = np.random.default_rng(seed).integers(0, 256, pos, dtype=np.uint8).tobytes()
    out = struct.pack("<Q", len(text)) + text + data + b"\0" * draw(st.sampled_from([0, 0, 5, 5000]))
    cut = draw(st.sampled_from([None, None, None, 1, 777]))  # sometimes truncated: invalid → fallback
    return out if cut is None or cut >= len(out) else out[: len(out) - cut]


@given(data=st.data())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_streamed_pointer_equals_ordinary_clean(tmp_path: Path, data: st.DataObject, streamed_log: list[bool]) -> None:
    content = data.draw(st.composite(lambda draw: safetensors_bytes(draw))())
    split = data.draw(st.sampled_from([1, 13, 4096, 65516]))
    mem_limit = data.draw(st.sampled_from([64, 3000, 20000]))
    store = ChunkStore(tmp_path / f"s{abs(hash(content)) % 10**9}-{split}")
    expected = clean(content, store, chunk_bytes=CHUNK, workers=2).pointer

    def streamer(head: bytes) -> StreamingClean:
        return StreamingClean(head, store, previous=None, recent=None, chunk_bytes=CHUNK, workers=2)

    spool = Spool(str(tmp_path / "tmp"), streamer, mem_limit=mem_limit)
    try:
        for i in range(0, len(content), split):
            spool.write(content[i : i + split])
        got = spool.streamed()
        streamed_log.append(got is not None)
        if got is None:  # fell back: the ordinary clean of the spooled bytes must agree too
            got = clean(spool.view(), store, chunk_bytes=CHUNK, workers=2, file_id=spool.file_id).pointer
    finally:
        spool.close()
    assert got == expected
    out = bytearray()
    smudge(got, store, lambda b: out.extend(b))
    assert bytes(out) == content


def test_large_files_stream_through_git_and_check_out_exactly(repo: Path) -> None:
    from helpers import git, make_state, perturb, save_safetensors, sha256

    state = make_state(0, layers=6, width=700)  # ~12 MB: above the in-memory spool limit, so it streams
    versions = []
    for i in range(2):
        save_safetensors(repo / "big.safetensors", state)
        git(repo, "add", "big.safetensors")
        git(repo, "commit", "-qm", f"v{i}")
        versions.append((git(repo, "rev-parse", "HEAD").strip(), sha256(repo / "big.safetensors")))
        state = perturb(state, i)
    data = (repo / "big.safetensors").read_bytes()
    (repo / "cut.safetensors").write_bytes(data[:-1000])  # truncated: streaming must fall back to opaque
    git(repo, "add", "cut.safetensors")
    git(repo, "commit", "-qm", "truncated")
    assert git(repo, "cat-file", "-p", "HEAD:cut.safetensors").splitlines()[1].split()[2] == "opaque"
    assert git(repo, "cat-file", "-p", "HEAD:big.safetensors").splitlines()[1].split()[2] == "safetensors"
    (repo / "big.safetensors").touch()
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""
    for commit, digest in versions:
        git(repo, "checkout", "-q", commit, "--", "big.safetensors")
        assert sha256(repo / "big.safetensors") == digest
    (repo / "cut.safetensors").unlink()
    git(repo, "checkout", "-q", "HEAD", "--", "cut.safetensors")
    assert (repo / "cut.safetensors").read_bytes() == data[:-1000]
