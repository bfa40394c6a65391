"""GGUF (llama.cpp): header, metadata key/values, tensor infos, padding, then aligned tensor data.

Versions 2 and 3, little-endian. Metadata values of every type (nested arrays included) are
walked without being kept, so memory stays bounded whatever the file claims; only
``general.alignment`` is read. Each tensor becomes one span: plain types get the safetensors dtype
codes, block-quantized types their ggml name (``Q4_K``), and the shape is ggml's ``ne`` reversed
(C order, the innermost axis last). Unknown types, counts that cannot fit in the file, overlaps,
big-endian files and anything truncated raise :class:`FormatError`: the file stays opaque.
"""

from __future__ import annotations

import math
import struct
from itertools import pairwise

from ..dtypes import GGML_TYPES
from ..errors import FormatError
from .layout import Layout, TensorSpan

FORMAT = "gguf"
MAGIC = b"GGUF"
MAX_STRING = 64 << 20
MAX_DEPTH = 32
MAX_DIMS = 8  # ggml's GGML_MAX_DIMS is 4; allow a little more
DEFAULT_ALIGNMENT = 32
MAX_ITEMS = 16_000_000  # metadata strings/arrays walked one by one (a 256k-token vocabulary is 256k)

# fixed sizes of the scalar value types; 8 = string, 9 = array
_SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9
_INT_TYPES = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 10: "<Q", 11: "<q"}


def probe(buf: memoryview) -> bool:
    """True when the file starts with the GGUF magic and version 2 or 3."""
    return len(buf) >= 24 and bytes(buf[:4]) == MAGIC and int.from_bytes(buf[4:8], "little") in (2, 3)


class _Reader:
    """A bounds-checked little-endian cursor over the file."""

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.items = MAX_ITEMS

    def take(self, n: int) -> int:
        pos = self.pos
        if n < 0 or n > self.size - pos:
            raise FormatError(f"GGUF truncated at byte {pos} (needs {n} more bytes)")
        self.pos = pos + n
        return pos

    def u32(self) -> int:
        return struct.unpack_from("<I", self.buf, self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack_from("<Q", self.buf, self.take(8))[0]

    def string(self) -> bytes:
        n = self.u64()
        if n > MAX_STRING:
            raise FormatError(f"GGUF string of {n} bytes at byte {self.pos}")
        at = self.take(n)
        return bytes(self.buf[at : at + n])

    def count(self, n: int) -> None:
        self.items -= n
        if self.items < 0:
            raise FormatError(f"GGUF metadata has more than {MAX_ITEMS} strings and arrays")

    def skip_string(self) -> None:
        n = self.u64()
        self.take(n)

    def value(self, vtype: int, depth: int = 0) -> int | None:
        """Skip one value; return it when it is an integer scalar (for ``general.alignment``)."""
        if vtype in _SCALAR:
            at = self.take(_SCALAR[vtype])
            fmt = _INT_TYPES.get(vtype)
            return struct.unpack_from(fmt, self.buf, at)[0] if fmt else None
        if vtype == _STRING:
            self.skip_string()
            return None
        if vtype != _ARRAY:
            raise FormatError(f"unknown GGUF value type {vtype} at byte {self.pos}")
        if depth >= MAX_DEPTH:
            raise FormatError(f"GGUF arrays nested deeper than {MAX_DEPTH}")
        etype, count = self.u32(), self.u64()
        if etype in _SCALAR:
            self.take(count * _SCALAR[etype])
        elif etype == _STRING:
            if count * 8 > self.size - self.pos:
                raise FormatError(f"GGUF string array of {count} items cannot fit in the file")
            self.count(count)
            for _ in range(count):
                self.skip_string()
        elif etype == _ARRAY:
            if count * 12 > self.size - self.pos:
                raise FormatError(f"GGUF nested array of {count} items cannot fit in the file")
            self.count(count)
            for _ in range(count):
                self.value(_ARRAY, depth + 1)
        else:
            raise FormatError(f"unknown GGUF array element type {etype}")
        return None


def read(buf: memoryview | bytes) -> Layout:
    """One span per tensor; raise FormatError if anything is inconsistent."""
    mv = memoryview(buf)
    if not probe(mv):
        raise FormatError("no GGUF magic or an unsupported version (only little-endian v2/v3)")
    r = _Reader(mv)
    r.take(8)
    n_tensors, n_kv = r.u64(), r.u64()
    # every KV takes at least 13 bytes, every tensor info at least 24: absurd counts fail early
    if n_kv * 13 + n_tensors * 24 > r.size - r.pos:
        raise FormatError(f"GGUF claims {n_kv} metadata entries and {n_tensors} tensors: more than the file holds")
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = r.string()
        vtype = r.u32()
        v = r.value(vtype)
        if key == b"general.alignment":
            if vtype != 4 or not v or v & (v - 1):
                raise FormatError(f"general.alignment {v!r} is not a power-of-two uint32")
            alignment = v
    infos: list[tuple[str, str, tuple[int, ...], int, int]] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        try:
            name = r.string().decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("GGUF tensor name is not UTF-8") from None
        if name in names:
            raise FormatError(f"duplicate GGUF tensor {name!r}")
        names.add(name)
        n_dims = r.u32()
        if n_dims > MAX_DIMS:
            raise FormatError(f"GGUF tensor {name!r} has {n_dims} dimensions")
        ne = tuple(r.u64() for _ in range(n_dims))
        code, offset = r.u32(), r.u64()
        t = GGML_TYPES.get(code)
        if t is None:
            raise FormatError(f"GGUF tensor {name!r} has unknown ggml type {code}")
        if ne and ne[0] % t.block:
            raise FormatError(f"GGUF tensor {name!r}: {ne[0]} elements per row is not whole {t.name} blocks")
        nbytes = math.prod(ne) // t.block * t.bytes
        infos.append((name, t.name, tuple(reversed(ne)), offset, nbytes))
    data_start = -(-r.pos // alignment) * alignment
    if data_start > r.size:
        raise FormatError("GGUF data section starts past the end of the file")
    spans: list[TensorSpan] = []
    for name, dtype, shape, offset, nbytes in infos:
        if offset % alignment or offset > r.size or data_start + offset + nbytes > r.size:
            raise FormatError(f"GGUF tensor {name!r} is misaligned or runs past the end of the file")
        spans.append(TensorSpan(name, dtype, shape, data_start + offset, nbytes))
    spans.sort(key=lambda s: (s.offset, s.end))
    for a, b in pairwise(spans):
        if b.offset < a.end:
            raise FormatError(f"GGUF tensors {a.name!r} and {b.name!r} overlap")
    return Layout(FORMAT, r.size, tuple(spans))
