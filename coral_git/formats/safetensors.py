"""safetensors: 8-byte little-endian header length, a JSON header, then the tensor data.

The header bytes (padding, key order, ``__metadata__``) stay in the skeleton untouched, so the
file is rebuilt exactly; only the tensors' payload ranges become spans.
"""

from __future__ import annotations

import json
import math
import struct

from ..errors import FormatError
from .layout import DTYPE_BITS, Layout, TensorSpan

FORMAT = "safetensors"
MAX_HEADER = 100 * 1024 * 1024  # the reference implementation refuses larger headers too


def probe(buf: memoryview) -> bool:
    """True when the first bytes look like a safetensors header."""
    if len(buf) < 10:
        return False
    (n,) = struct.unpack_from("<Q", buf, 0)
    return 2 <= n <= min(MAX_HEADER, len(buf) - 8) and bytes(buf[8:9]) == b"{"


def read(buf: memoryview) -> Layout:
    """Read the header and return the tensor spans; raise FormatError if anything is inconsistent."""
    return read_header(buf, len(buf))


def header_length(head: bytes | memoryview) -> int:
    """The number of bytes (8 + JSON) the header occupies, from the first 8 bytes."""
    (n,) = struct.unpack_from("<Q", head, 0)
    return 8 + n


def read_header(buf: bytes | memoryview, size: int) -> Layout:
    """The layout of a ``size``-byte file whose first bytes (at least the whole header) are ``buf``."""
    if size < 8 or len(buf) < 8:
        raise FormatError("file shorter than the 8-byte header length")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER or 8 + n > size:
        raise FormatError(f"header length {n} exceeds the file ({size} bytes)")
    try:
        header = json.loads(bytes(buf[8 : 8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise FormatError("header is not a JSON object")
    data_start = 8 + n
    spans: list[TensorSpan] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        spans.append(_span(name, info, data_start, size))
    spans.sort(key=lambda s: (s.offset, s.end))
    pos = data_start
    for s in spans:
        if s.offset < pos:
            raise FormatError(f"tensor {s.name!r} overlaps another tensor")
        pos = s.end
    return Layout(FORMAT, size, tuple(spans))


def _span(name: str, info: object, data_start: int, size: int) -> TensorSpan:
    if not isinstance(info, dict):
        raise FormatError(f"tensor {name!r}: entry is not an object")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"tensor name {name!r} is not valid UTF-8") from None
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise FormatError(f"tensor {name!r}: unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(f"tensor {name!r}: bad shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise FormatError(f"tensor {name!r}: bad data_offsets {offsets!r}")
    begin, end = data_start + offsets[0], data_start + offsets[1]
    if end > size:
        raise FormatError(f"tensor {name!r}: data_offsets run past the end of the file")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or bits // 8 != end - begin:
        raise FormatError(f"tensor {name!r}: {end - begin} bytes do not fit dtype {dtype} and shape {shape}")
    return TensorSpan(name, dtype, tuple(shape), begin, end - begin)
