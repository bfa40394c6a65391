"""NumPy ``.npy``: magic, version, a Python-literal header dict, then one array's raw bytes.

The header is read with :func:`ast.literal_eval` (literals only, nothing is called) after a size
cap, and the dtype string is parsed by numpy's own descr parser. Object arrays are pickles and
raise :class:`FormatError` (the file stays opaque, nothing is unpickled). Fortran-order data is the
C-order array of the reversed shape, so the span gets that shape; big-endian and structured
arrays become a ``U8`` span of their bytes. Trailing bytes after the data stay in the skeleton.
"""

from __future__ import annotations

import ast
import math
import struct

import numpy as np

from ..errors import FormatError
from .layout import Layout, TensorSpan

FORMAT = "npy"
MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20  # numpy itself refuses headers over 10 kB unless told otherwise
NAME = "array"

# little-endian / byte-order-free numpy kinds -> safetensors dtype codes
_CODES: dict[str, str] = {
    "b1": "BOOL", "u1": "U8", "i1": "I8", "u2": "U16", "i2": "I16", "f2": "F16", "u4": "U32", "i4": "I32",
    "f4": "F32", "u8": "U64", "i8": "I64", "f8": "F64", "c8": "C64", "c16": "C128",
}  # fmt: skip


def probe(buf: memoryview) -> bool:
    """True when the file starts with the npy magic and a known version."""
    return len(buf) >= 10 and bytes(buf[:6]) == MAGIC and buf[6] in (1, 2, 3) and buf[7] == 0


def parse_header(buf: memoryview) -> tuple[int, str, tuple[int, ...], int]:
    """``(data offset, dtype code, C-order shape, data nbytes)`` of the array ``buf`` starts with."""
    if not probe(buf):
        raise FormatError("no npy magic")
    major = buf[6]
    if major == 1:
        (hlen,), start = struct.unpack_from("<H", buf, 8), 10
    else:
        if len(buf) < 12:
            raise FormatError("npy header length truncated")
        (hlen,), start = struct.unpack_from("<I", buf, 8), 12
    if hlen > MAX_HEADER or start + hlen > len(buf):
        raise FormatError(f"npy header length {hlen} runs past the file or the limit")
    raw = bytes(buf[start : start + hlen])
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
        header = ast.literal_eval(text)
    except (UnicodeDecodeError, ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
        raise FormatError(f"npy header is not a Python literal ({type(exc).__name__})") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise FormatError("npy header lacks descr/fortran_order/shape")
    shape, fortran = header["shape"], header["fortran_order"]
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape) or type(fortran) is not bool:
        raise FormatError(f"npy header has a bad shape {shape!r} or fortran_order")
    try:
        dt = np.lib.format.descr_to_dtype(header["descr"])
    except (TypeError, ValueError, KeyError, IndexError, RecursionError) as exc:
        raise FormatError(f"npy descr is not a dtype ({type(exc).__name__})") from None
    if dt.hasobject:
        raise FormatError("npy holds Python objects (a pickle): left opaque, never unpickled")
    data_at = start + hlen
    nbytes = math.prod(shape) * dt.itemsize
    if data_at + nbytes > len(buf):
        raise FormatError(f"npy data ({nbytes} bytes) runs past the end of the file")
    key = f"{dt.kind}{dt.itemsize}"
    code = _CODES.get(key) if dt.fields is None and dt.subdtype is None and dt.byteorder in "<|=" else None
    if code is None:
        return data_at, "U8", (nbytes,), nbytes
    c_shape = tuple(reversed(shape)) if fortran else shape
    return data_at, code, c_shape, nbytes


def read(buf: memoryview) -> Layout:
    """One span holding the array's bytes; raise FormatError if the header is malformed."""
    data_at, code, shape, nbytes = parse_header(buf)
    return Layout(FORMAT, len(buf), (TensorSpan(NAME, code, shape, data_at, nbytes),))
