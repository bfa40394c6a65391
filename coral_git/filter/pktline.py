"""git's pkt-line framing: a 4-hex-digit length (including itself) then the payload; 0000 = flush."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

MAX_DATA = 65516
IOV_MAX = 1024  # buffers per writev (Linux's limit)
BLOCK = 1 << 20  # content handed on per step by PktReader.content


class PktLineError(Exception):
    """The other side broke the pkt-line protocol."""


class PktReader:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def _exact(self, n: int) -> bytes:
        data = self.f.read(n)
        if data is None or len(data) != n:
            raise EOFError("pkt-line stream ended")
        return data

    def read(self) -> bytes | None:
        """The next packet's payload, or None for a flush packet."""
        head = self.f.read(4)
        if not head:
            raise EOFError("pkt-line stream ended")
        if len(head) != 4:
            raise PktLineError("truncated pkt-line header")
        try:
            n = int(head, 16)
        except ValueError:
            raise PktLineError(f"bad pkt-line header {head!r}") from None
        if n == 0:
            return None
        if n < 4 or n > MAX_DATA + 4:
            raise PktLineError(f"bad pkt-line length {n}")
        return self._exact(n - 4)

    def content(self, block: int = BLOCK) -> Iterator[memoryview]:
        """The payloads up to the next flush packet, joined into blocks of up to ``block`` bytes.

        Each payload is read straight into the block (no bytes object per 64 KiB packet), and the
        consumer sees a few calls per MiB instead of sixteen. A block is only valid until the next
        one is asked for (the buffer is reused): consumers copy or hash it at once.
        """
        buf = bytearray(max(block, MAX_DATA))
        view = memoryview(buf)
        n = 0
        while True:
            head = self.f.read(4)
            if len(head) != 4:
                raise EOFError("pkt-line stream ended") if not head else PktLineError("truncated pkt-line header")
            try:
                size = int(head, 16) - 4
            except ValueError:
                raise PktLineError(f"bad pkt-line header {head!r}") from None
            if size == -4:
                if n:
                    yield view[:n]
                return
            if size < 0 or size > MAX_DATA:
                raise PktLineError(f"bad pkt-line length {size + 4}")
            if n + size > len(buf):
                yield view[:n]
                n = 0
            got = self.f.readinto(view[n : n + size])
            if got != size:
                raise EOFError("pkt-line stream ended")
            n += size

    def read_text_list(self) -> list[str]:
        """Text packets up to the next flush, without their trailing newlines."""
        out: list[str] = []
        while (pkt := self.read()) is not None:
            out.append(pkt.decode("utf-8", errors="surrogateescape").rstrip("\n"))
        return out


class PktWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self._fileno: int | None = None

    def packet(self, data: bytes | memoryview) -> None:
        self.f.write(b"%04x" % (len(data) + 4))
        self.f.write(data)

    def text(self, line: str) -> None:
        self.packet((line + "\n").encode())

    def flush(self) -> None:
        self.f.write(b"0000")
        self.f.flush()

    def data(self, data: bytes | memoryview) -> None:
        """Send any amount of content, split into maximal packets (no flush).

        On a real file descriptor the packets of one call go out with one ``writev`` (a 1 MiB chunk
        was 32 writes, half of them 4 bytes long); elsewhere (tests' BytesIO) packet by packet."""
        mv = memoryview(data).cast("B")
        parts: list[bytes | memoryview] = []
        for i in range(0, len(mv), MAX_DATA):
            piece = mv[i : i + MAX_DATA]
            parts += (b"%04x" % (len(piece) + 4), piece)
        fd = self._fd()
        if fd is None or len(parts) <= 2:
            for part in parts:
                self.f.write(part)
            return
        self.f.flush()  # what is buffered goes first
        while parts:
            done = os.writev(fd, parts[:IOV_MAX])
            while parts and done >= len(parts[0]):  # drop what went out; a partial write resumes mid-part
                done -= len(parts[0])
                parts.pop(0)
            if done:
                parts[0] = memoryview(parts[0])[done:]

    def _fd(self) -> int | None:
        if self._fileno is None:
            try:
                self._fileno = self.f.fileno()
            except (OSError, AttributeError, ValueError):  # io.UnsupportedOperation is an OSError
                self._fileno = -1
        return None if self._fileno < 0 else self._fileno
