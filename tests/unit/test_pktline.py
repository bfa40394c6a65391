"""git's pkt-line framing and the filter's spool (the bytes git sends, held in memory or a file)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import xxhash

from coral_git.core.mapped import MappedFile
from coral_git.filter.pktline import MAX_DATA, PktLineError, PktReader, PktWriter
from coral_git.filter.process import Spool


def test_round_trip_text_flush_and_large_data() -> None:
    buf = io.BytesIO()
    w = PktWriter(buf)
    w.text("git-filter-server")
    w.text("version=2")
    w.flush()
    payload = bytes(range(256)) * 1000  # 256000 bytes: several maximal packets
    w.data(payload)
    w.flush()
    raw = buf.getvalue()
    assert raw.startswith(b"0016git-filter-server\n000eversion=2\n0000")
    r = PktReader(io.BytesIO(raw))
    assert r.read_text_list() == ["git-filter-server", "version=2"]
    got, sizes = bytearray(), []
    while (pkt := r.read()) is not None:
        sizes.append(len(pkt))
        got += pkt
    assert bytes(got) == payload
    assert max(sizes) == MAX_DATA and all(s == MAX_DATA for s in sizes[:-1])
    with pytest.raises(EOFError):
        r.read()


@pytest.mark.parametrize("raw", [b"00", b"zzzz", b"0002", b"0003", b"%04x" % (MAX_DATA + 5)])
def test_broken_framing_is_an_error(raw: bytes) -> None:
    with pytest.raises(PktLineError):
        PktReader(io.BytesIO(raw)).read()


def test_packet_cut_short_is_eof() -> None:
    with pytest.raises(EOFError):
        PktReader(io.BytesIO(b"0010abc")).read()


def test_empty_data_sends_no_packet() -> None:
    buf = io.BytesIO()
    PktWriter(buf).data(b"")
    assert buf.getvalue() == b""


def test_spool_small_stays_in_memory(tmp_path: Path) -> None:
    s = Spool(str(tmp_path / "tmp"), mem_limit=100)
    for part in (b"abc", b"def"):
        s.write(part)
    try:
        assert s.view() == b"abcdef"
        assert s.size == 6 and s.file_id == xxhash.xxh3_128(b"abcdef").hexdigest()
        assert s.streamed() is None
        assert not (tmp_path / "tmp").exists()  # nothing touched the disk
    finally:
        s.close()


def test_spool_large_goes_to_a_file_read_back_through_mmap(tmp_path: Path) -> None:
    data = bytes(range(256)) * 64
    s = Spool(str(tmp_path / "tmp"), mem_limit=1000)
    for i in range(0, len(data), 700):
        s.write(data[i : i + 700])
    try:
        v = s.view()
        assert isinstance(v, MappedFile)
        assert bytes(v.view()) == data
        assert s.size == len(data) and s.file_id == xxhash.xxh3_128(data).hexdigest()
    finally:
        s.close()


def test_content_joins_packets_into_blocks_up_to_the_flush() -> None:
    payload = bytes(range(256)) * 1500  # 384000 bytes: six packets, the last one short
    buf = io.BytesIO()
    w = PktWriter(buf)
    w.data(payload)
    w.flush()
    w.text("next")
    w.flush()
    w.flush()  # empty content
    r = PktReader(io.BytesIO(buf.getvalue()))
    blocks = [bytes(b) for b in r.content(block=2 * MAX_DATA + 10)]
    assert b"".join(blocks) == payload
    assert [len(b) for b in blocks] == [2 * MAX_DATA, 2 * MAX_DATA, 2 * MAX_DATA - (6 * MAX_DATA - len(payload))]
    assert r.read_text_list() == ["next"]  # nothing past the flush was consumed
    assert list(r.content()) == []  # a flush straight away: no content
    with pytest.raises(EOFError):
        list(r.content())


@pytest.mark.parametrize("raw", [b"0010abc", b"00", b"zzzz", b"0002"])
def test_content_cut_short_or_broken(raw: bytes) -> None:
    with pytest.raises((EOFError, PktLineError)):
        list(PktReader(io.BytesIO(raw)).content())


def test_data_on_a_pipe_is_the_same_bytes(tmp_path: Path) -> None:
    """On a real descriptor the packets go out with writev: the bytes must be exactly those of the
    packet-by-packet path (a file stands in for git's pipe)."""
    payload = bytes(range(251)) * 3000  # 753000 bytes: twelve packets, the last one short
    ref = io.BytesIO()
    PktWriter(ref).text("status=success")
    PktWriter(ref).data(payload)
    PktWriter(ref).data(b"tail")
    with open(tmp_path / "out", "wb") as f:
        w = PktWriter(f)
        w.text("status=success")  # buffered: must go out before the writev'd packets
        w.data(payload)
        w.data(b"tail")
        w.flush()
    assert (tmp_path / "out").read_bytes() == ref.getvalue() + b"0000"
