"""ONNX models: the ``ModelProto`` protobuf read at the wire-format level, nothing executed.

The reader walks ``ModelProto.graph`` (field 7) and, inside each graph, ``initializer`` tensors
(5), ``sparse_initializer`` values and indices (15) and the tensors of node attributes (``t``,
``tensors``) including subgraphs (``g``, ``graphs``) of ``If``/``Loop``/``Scan``. Each tensor's
``raw_data`` (field 9) becomes a span; packed ``float_data`` / ``double_data`` do too, since they
are little-endian F32/F64 arrays. Every other byte (graph, names, varint data, metadata) is
skeleton. Tensors stored as external data have no bytes here; their data file stays opaque.

Any wire-format error, a group, a length past its message or nesting deeper than a bound raises
:class:`FormatError`; the whole file must parse as a ModelProto with a graph.
"""

from __future__ import annotations

import math
from itertools import pairwise

from ..dtypes import DTYPE_BITS
from ..errors import FormatError
from .layout import Layout, TensorSpan
from .pickle_reader import unique_name

FORMAT = "onnx"
MAX_DEPTH = 64
MAX_DIMS = 64
MAX_FIELDS = 16_000_000  # fields walked in one file: real models have far fewer, a crafted file stops here

# TensorProto.DataType -> safetensors dtype codes (4-bit and 2-bit types are kept as U8 bytes)
_DTYPES = {
    1: "F32", 2: "U8", 3: "I8", 4: "U16", 5: "I16", 6: "I32", 7: "I64", 9: "BOOL", 10: "F16", 11: "F64",
    12: "U32", 13: "U64", 14: "C64", 15: "C128", 16: "BF16", 17: "F8_E4M3", 18: "F8_E4M3FNUZ",
    19: "F8_E5M2", 20: "F8_E5M2FNUZ", 24: "F8_E8M0",
}  # fmt: skip
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def _varint(mv: memoryview, pos: int, end: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise FormatError(f"protobuf varint truncated or too long at byte {pos}")
        b = mv[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, pos
        shift += 7


def fields(mv: memoryview, pos: int, end: int, budget: list[int] | None = None):
    """Yield ``(field number, wire type, value or payload start, payload end)`` of one message.

    ``budget`` (a one-item list) counts down per field; at zero the walk stops with FormatError.
    """
    while pos < end:
        if budget is not None:
            budget[0] -= 1
            if budget[0] < 0:
                raise FormatError(f"more than {MAX_FIELDS} protobuf fields: not walked further")
        key, pos = _varint(mv, pos, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise FormatError("protobuf field number 0")
        if wt == _VARINT:
            v, pos = _varint(mv, pos, end)
            yield num, wt, v, pos
        elif wt == _I64 or wt == _I32:
            n = 8 if wt == _I64 else 4
            if pos + n > end:
                raise FormatError("protobuf fixed-size field truncated")
            yield num, wt, pos, pos + n
            pos += n
        elif wt == _LEN:
            n, pos = _varint(mv, pos, end)
            if n > end - pos:
                raise FormatError(f"protobuf length {n} runs past its message at byte {pos}")
            yield num, wt, pos, pos + n
            pos += n
        else:
            raise FormatError(f"protobuf wire type {wt} (groups are not used by ONNX)")


def probe(buf: memoryview) -> bool:
    """True when the file starts like a serialized ModelProto: ``ir_version`` (field 1) first."""
    return len(buf) >= 4 and buf[0] == 0x08 and 1 <= buf[1] <= 0x40


class _Walker:
    def __init__(self, mv: memoryview) -> None:
        self.mv = mv
        self.spans: list[TensorSpan] = []
        self.used: dict[str, int] = {}
        self.budget = [MAX_FIELDS]

    def graph(self, start: int, end: int, prefix: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FormatError(f"ONNX graphs nested deeper than {MAX_DEPTH}")
        mv = self.mv
        for i, (num, wt, a, b) in enumerate(fields(mv, start, end, self.budget)):
            if wt != _LEN:
                continue
            if num == 5:
                self.tensor(a, b, f"{prefix}initializer.{i}")
            elif num == 15:  # SparseTensorProto: values = 1, indices = 2
                for snum, swt, sa, sb in fields(mv, a, b, self.budget):
                    if swt == _LEN and snum in (1, 2):
                        self.tensor(sa, sb, f"{prefix}sparse.{i}.{'values' if snum == 1 else 'indices'}")
            elif num == 1:
                self.node(a, b, f"{prefix}node.{i}", depth)

    def node(self, start: int, end: int, where: str, depth: int) -> None:
        mv, name, attrs = self.mv, "", []
        for num, wt, a, b in fields(mv, start, end, self.budget):
            if wt == _LEN and num == 3:
                name = _text(mv, a, b)
            elif wt == _LEN and num == 5:
                attrs.append((a, b))
        where = name or where
        for a, b in attrs:
            aname, items = "", []
            for num, wt, fa, fb in fields(mv, a, b, self.budget):
                if wt != _LEN:
                    continue
                if num == 1:
                    aname = _text(mv, fa, fb)
                elif num in (5, 10, 6, 11):
                    items.append((num, fa, fb))
            for k, (num, fa, fb) in enumerate(items):
                label = f"{where}/{aname}" + (f".{k}" if len(items) > 1 else "")
                if num in (5, 10):
                    self.tensor(fa, fb, label)
                else:
                    self.graph(fa, fb, f"{label}/", depth + 1)

    def tensor(self, start: int, end: int, fallback: str) -> None:
        mv = self.mv
        dims: list[int] = []
        dtype, name = 0, ""
        payloads: list[tuple[int, int, int]] = []
        for num, wt, a, b in fields(mv, start, end, self.budget):
            if num == 1:
                if wt == _VARINT:
                    dims.append(a)
                elif wt == _LEN:
                    pos = a
                    while pos < b and len(dims) <= MAX_DIMS:
                        d, pos = _varint(mv, pos, b)
                        dims.append(d)
                if len(dims) > MAX_DIMS:
                    raise FormatError(f"ONNX tensor with more than {MAX_DIMS} dims")
            elif num == 2 and wt == _VARINT:
                dtype = a
            elif num == 8 and wt == _LEN:
                name = _text(mv, a, b)
            elif wt == _LEN and num in (9, 4, 10) and b > a:
                payloads.append((num, a, b))
        for num, a, b in payloads:
            code = {4: "F32", 10: "F64"}.get(num) or _DTYPES.get(dtype)
            shape: tuple[int, ...] = tuple(d if d < (1 << 63) else 0 for d in dims)
            bits = DTYPE_BITS.get(code or "", 0)
            if code is None or math.prod(shape) * bits != 8 * (b - a):
                code, shape = "U8", (b - a,)
            label = name or fallback
            self.spans.append(TensorSpan(unique_name(label, self.used), code, shape, a, b - a))


def _text(mv: memoryview, a: int, b: int) -> str:
    return bytes(mv[a:b]).decode("utf-8", "replace")


def read(buf: memoryview | bytes) -> Layout:
    """One span per tensor payload; raise FormatError unless the file is a ModelProto with a graph."""
    mv = memoryview(buf)
    if not probe(mv):
        raise FormatError("does not start with an ONNX ir_version field")
    walker = _Walker(mv)
    graphs = 0
    seen_ir = False
    for num, wt, a, b in fields(mv, 0, len(mv), walker.budget):
        if num == 1 and wt == _VARINT:
            seen_ir = True
        elif num == 7 and wt == _LEN:
            graphs += 1
            walker.graph(a, b, "", 0)
        elif num in (1, 7) or (num in (2, 3, 4, 6, 8, 14) and wt != _LEN) or (num == 5 and wt != _VARINT):
            raise FormatError(f"ModelProto field {num} has the wrong wire type")
    if not seen_ir or graphs != 1:
        raise FormatError("not an ONNX ModelProto (needs ir_version and one graph)")
    spans = sorted(walker.spans, key=lambda s: (s.offset, s.end))
    for x, y in pairwise(spans):
        if y.offset < x.end:
            raise FormatError(f"ONNX tensors {x.name!r} and {y.name!r} overlap")
    return Layout(FORMAT, len(mv), tuple(spans))
