"""git's pkt-line framing: a 4-hex-digit length (including itself) then the payload; 0000 = flush."""

from __future__ import annotations

from typing import BinaryIO

MAX_DATA = 65516


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

    def read_text_list(self) -> list[str]:
        """Text packets up to the next flush, without their trailing newlines."""
        out: list[str] = []
        while (pkt := self.read()) is not None:
            out.append(pkt.decode("utf-8", errors="surrogateescape").rstrip("\n"))
        return out


class PktWriter:
    def __init__(self, f: BinaryIO) -> None:
        self.f = f

    def packet(self, data: bytes | memoryview) -> None:
        self.f.write(b"%04x" % (len(data) + 4))
        self.f.write(data)

    def text(self, line: str) -> None:
        self.packet((line + "\n").encode())

    def flush(self) -> None:
        self.f.write(b"0000")
        self.f.flush()

    def data(self, data: bytes | memoryview) -> None:
        """Send any amount of content, split into maximal packets (no flush)."""
        mv = memoryview(data).cast("B")
        for i in range(0, len(mv), MAX_DATA):
            self.packet(mv[i : i + MAX_DATA])
