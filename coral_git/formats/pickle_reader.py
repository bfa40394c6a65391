"""A safe, symbolic pickle reader and a finder for the tensors a ``torch.save`` pickle describes.

:func:`parse_pickle` walks the opcode stream itself (protocols 0-5) and never imports or calls
anything: a global becomes :class:`Global`, a call becomes :class:`Call`, a persistent id becomes
:class:`PersistentRef`. Plain containers and scalars become themselves; a few pure builtins
(``OrderedDict``, ``set``, ``bytes`` ...) are evaluated on checked arguments. Every length, count
and depth is bounded; any problem raises :class:`FormatError`.

:func:`find_tensors` then walks the tree (iteratively) and names every tensor by its dotted path.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import FormatError
from .layout import DTYPE_BITS

MAX_PICKLE_BYTES = 512 << 20
MAX_OPS = 16_000_000
MAX_NEST = 1000  # nesting of hashable containers (tuple, frozenset, PersistentRef)
MAX_LONG_BYTES = 1 << 20
MAX_VISITS = 5_000_000
MAX_NAME = 1024


@dataclass(frozen=True, slots=True)
class Global:
    """A ``module.name`` reference that was never imported."""

    module: str
    name: str


@dataclass(eq=False, slots=True)
class Call:
    """``func(*args, **kwargs)`` that was never called, with the items and state pickle added."""

    func: Any
    args: tuple[Any, ...]
    kwargs: dict[Any, Any] | None = None
    state: Any = None
    listitems: list[Any] = field(default_factory=list)
    dictitems: list[tuple[Any, Any]] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Build:
    """``obj.__setstate__(state)`` on an object that is not a :class:`Call`."""

    obj: Any
    state: Any


@dataclass(frozen=True, slots=True)
class PersistentRef:
    """A persistent id (for torch: ``('storage', type, key, location, numel)``)."""

    pid: Any


_I32, _U16, _U32, _U64, _F64 = (struct.Struct(f) for f in ("<i", "<H", "<I", "<Q", ">d"))
_NESTED = frozenset({tuple, frozenset, PersistentRef})
_MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


_NO_RESULT = object()


def _evaluate(func: Global, args: tuple[Any, ...]) -> Any:
    """Pure builtins rebuilt on checked arguments; anything else stays a symbolic :class:`Call`."""
    key = (func.module, func.name)
    n = len(args)
    if key == ("collections", "OrderedDict"):
        if n == 0:
            return {}
        if (
            n == 1
            and isinstance(args[0], (list, tuple))
            and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in args[0])
        ):
            return dict(args[0])
    elif key in (("builtins", "set"), ("builtins", "frozenset")):
        if n == 0:
            return set() if func.name == "set" else frozenset()
        if n == 1 and isinstance(args[0], (list, tuple, set, frozenset)):
            return set(args[0]) if func.name == "set" else frozenset(args[0])
    elif key in (("builtins", "bytes"), ("builtins", "bytearray")):
        kind = bytes if func.name == "bytes" else bytearray
        if n == 0:
            return kind()
        if n == 1 and isinstance(args[0], (bytes, bytearray, list)):
            if isinstance(args[0], list) and not all(type(x) is int and 0 <= x < 256 for x in args[0]):
                return None
            return kind(args[0])
        if n == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return kind(args[0].encode("latin-1"))
    elif key == ("_codecs", "encode"):
        if n == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return args[0].encode("latin-1")
    elif key == ("builtins", "complex"):
        if 1 <= n <= 2 and all(type(a) in (int, float) for a in args):
            return complex(*args)
    return None


class _Machine:
    """The pickle virtual machine, symbolic edition."""

    def __init__(self, data: bytes, max_ops: int) -> None:
        self.data = data
        self.size = len(data)
        self.pos = 0
        self.max_ops = max_ops
        self.stack: list[Any] = []
        self.metastack: list[list[Any]] = []
        self.memo: dict[int, Any] = {}
        self.nest: dict[int, int] = {}
        self.result: Any = _NO_RESULT

    # ---- input -------------------------------------------------------------------------------
    def read(self, n: int) -> bytes:
        pos = self.pos
        if n < 0 or n > self.size - pos:
            raise FormatError(f"pickle truncated or length {n} out of range at byte {pos}")
        self.pos = pos + n
        return self.data[pos : pos + n]

    def byte(self) -> int:
        pos = self.pos
        if pos >= self.size:
            raise FormatError("pickle truncated")
        self.pos = pos + 1
        return self.data[pos]

    def unpack(self, fmt: struct.Struct) -> Any:
        pos = self.pos
        if fmt.size > self.size - pos:
            raise FormatError(f"pickle truncated at byte {pos}")
        self.pos = pos + fmt.size
        return fmt.unpack_from(self.data, pos)[0]

    def readline(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise FormatError("pickle truncated inside a text line")
        out = self.data[self.pos : end]
        self.pos = end + 1
        return out

    # ---- stack -------------------------------------------------------------------------------
    def pop(self) -> Any:
        if not self.stack:
            raise FormatError("pickle stack underflow")
        return self.stack.pop()

    def top(self) -> Any:
        if not self.stack:
            raise FormatError("pickle stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise FormatError("pickle MARK not found")
        items = self.stack
        self.stack = self.metastack.pop()
        return items

    def hashable(self, obj: Any, children: Any) -> Any:
        """Record the nesting depth of a new tuple/frozenset/PersistentRef (hashing recurses)."""
        nest, depth = self.nest, 0
        for c in children:
            if type(c) in _NESTED:
                depth = max(depth, nest.get(id(c), 0))
        if depth >= MAX_NEST:
            raise FormatError(f"pickle nests tuples deeper than {MAX_NEST}")
        nest[id(obj)] = depth + 1
        return obj

    def push_tuple(self, items: list[Any]) -> None:
        self.stack.append(self.hashable(tuple(items), items))

    def call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        if not isinstance(args, tuple):
            raise FormatError("pickle call arguments are not a tuple")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise FormatError("pickle call keyword arguments are not a dict")
        if isinstance(func, Global) and not kwargs:
            value = _evaluate(func, args)
            if value is not None:
                return value
        return Call(func, args, kwargs)

    # ---- run ---------------------------------------------------------------------------------
    def run(self) -> Any:
        data, dispatch = self.data, _DISPATCH
        ops = 0
        while self.result is _NO_RESULT:
            if self.pos >= len(data):
                raise FormatError("pickle truncated (no STOP)")
            code = data[self.pos]
            handler = dispatch.get(code)
            if handler is None:
                raise FormatError(f"unknown pickle opcode 0x{code:02x} at byte {self.pos}")
            self.pos += 1
            ops += 1
            if ops > self.max_ops:
                raise FormatError(f"pickle has more than {self.max_ops} opcodes")
            try:
                handler(self)
            except FormatError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, OverflowError, RecursionError, struct.error) as exc:
                name = _OPNAMES.get(code, "?")
                raise FormatError(f"bad pickle {name} at byte {self.pos}: {type(exc).__name__}") from None
        return self.result

    # ---- opcodes: framing and control ------------------------------------------------------
    def op_PROTO(self) -> None:
        if self.byte() > 5:
            raise FormatError("unsupported pickle protocol")

    def op_FRAME(self) -> None:
        n = self.unpack(_U64)
        if n > len(self.data) - self.pos:
            raise FormatError("pickle frame runs past the end")

    def op_STOP(self) -> None:
        self.result = self.pop()

    def op_MARK(self) -> None:
        self.metastack.append(self.stack)
        self.stack = []

    def op_POP(self) -> None:
        if self.stack:
            self.stack.pop()
        else:
            self.pop_mark()

    def op_POP_MARK(self) -> None:
        self.pop_mark()

    def op_DUP(self) -> None:
        self.stack.append(self.top())

    # ---- scalars ----------------------------------------------------------------------------
    def op_NONE(self) -> None:
        self.stack.append(None)

    def op_NEWTRUE(self) -> None:
        self.stack.append(True)

    def op_NEWFALSE(self) -> None:
        self.stack.append(False)

    def op_INT(self) -> None:
        line = self.readline()
        self.stack.append(line == b"01" if line in (b"00", b"01") else int(line, 0))

    def op_LONG(self) -> None:
        line = self.readline()
        self.stack.append(int(line[:-1] if line.endswith(b"L") else line, 0))

    def op_BININT(self) -> None:
        self.stack.append(self.unpack(_I32))

    def op_BININT1(self) -> None:
        self.stack.append(self.byte())

    def op_BININT2(self) -> None:
        self.stack.append(self.unpack(_U16))

    def op_LONG1(self) -> None:
        self.stack.append(int.from_bytes(self.read(self.byte()), "little", signed=True))

    def op_LONG4(self) -> None:
        n = self.unpack(_I32)
        if n > MAX_LONG_BYTES:
            raise FormatError("pickle LONG4 integer is absurdly long")
        self.stack.append(int.from_bytes(self.read(n), "little", signed=True))

    def op_FLOAT(self) -> None:
        self.stack.append(float(self.readline()))

    def op_BINFLOAT(self) -> None:
        self.stack.append(self.unpack(_F64))

    # ---- strings and bytes ------------------------------------------------------------------
    def _py2_string(self, raw: bytes) -> None:
        try:
            self.stack.append(raw.decode("ascii"))
        except UnicodeDecodeError:
            self.stack.append(raw)

    def op_STRING(self) -> None:
        line = self.readline().rstrip(b"\r")
        if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
            raise FormatError("pickle STRING is not quoted")
        self._py2_string(codecs.escape_decode(line[1:-1])[0])

    def op_BINSTRING(self) -> None:
        self._py2_string(self.read(self.unpack(_I32)))

    def op_SHORT_BINSTRING(self) -> None:
        self._py2_string(self.read(self.byte()))

    def op_UNICODE(self) -> None:
        self.stack.append(self.readline().decode("raw-unicode-escape"))

    def _text(self, n: int) -> None:
        self.stack.append(self.read(n).decode("utf-8", "surrogatepass"))

    def op_BINUNICODE(self) -> None:
        self._text(self.unpack(_U32))

    def op_SHORT_BINUNICODE(self) -> None:
        self._text(self.byte())

    def op_BINUNICODE8(self) -> None:
        self._text(self.unpack(_U64))

    def op_BINBYTES(self) -> None:
        self.stack.append(self.read(self.unpack(_U32)))

    def op_SHORT_BINBYTES(self) -> None:
        self.stack.append(self.read(self.byte()))

    def op_BINBYTES8(self) -> None:
        self.stack.append(self.read(self.unpack(_U64)))

    def op_BYTEARRAY8(self) -> None:
        self.stack.append(bytearray(self.read(self.unpack(_U64))))

    def op_NEXT_BUFFER(self) -> None:
        raise FormatError("pickle uses out-of-band buffers")

    def op_READONLY_BUFFER(self) -> None:
        if isinstance(self.top(), bytearray):
            self.stack[-1] = bytes(self.stack[-1])

    # ---- containers -------------------------------------------------------------------------
    def op_EMPTY_TUPLE(self) -> None:
        self.push_tuple([])

    def op_TUPLE(self) -> None:
        self.push_tuple(self.pop_mark())

    def op_TUPLE1(self) -> None:
        self.push_tuple([self.pop()])

    def op_TUPLE2(self) -> None:
        b, a = self.pop(), self.pop()
        self.push_tuple([a, b])

    def op_TUPLE3(self) -> None:
        c, b, a = self.pop(), self.pop(), self.pop()
        self.push_tuple([a, b, c])

    def op_EMPTY_LIST(self) -> None:
        self.stack.append([])

    def op_LIST(self) -> None:
        items = self.pop_mark()  # pop first: it replaces self.stack
        self.stack.append(items)

    def op_EMPTY_DICT(self) -> None:
        self.stack.append({})

    def op_DICT(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise FormatError("pickle DICT has an odd number of items")
        self.stack.append(dict(zip(items[::2], items[1::2], strict=True)))

    def op_EMPTY_SET(self) -> None:
        self.stack.append(set())

    def op_FROZENSET(self) -> None:
        items = self.pop_mark()
        self.stack.append(self.hashable(frozenset(items), items))

    def op_APPEND(self) -> None:
        value = self.pop()
        self._extend([value])

    def op_APPENDS(self) -> None:
        self._extend(self.pop_mark())

    def _extend(self, items: list[Any]) -> None:
        target = self.top()
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, Call):
            target.listitems.extend(items)
        else:
            raise FormatError(f"pickle appends to a {type(target).__name__}")

    def op_SETITEM(self) -> None:
        value = self.pop()
        key = self.pop()
        self._setitems([key, value])

    def op_SETITEMS(self) -> None:
        self._setitems(self.pop_mark())

    def _setitems(self, items: list[Any]) -> None:
        if len(items) % 2:
            raise FormatError("pickle SETITEMS has an odd number of items")
        target = self.top()
        pairs = zip(items[::2], items[1::2], strict=True)
        if isinstance(target, dict):
            for k, v in pairs:
                target[k] = v
        elif isinstance(target, Call):
            target.dictitems.extend(pairs)
        else:
            raise FormatError(f"pickle sets items on a {type(target).__name__}")

    def op_ADDITEMS(self) -> None:
        items = self.pop_mark()
        target = self.top()
        if not isinstance(target, set):
            raise FormatError("pickle ADDITEMS target is not a set")
        target.update(items)

    # ---- memo -------------------------------------------------------------------------------
    def _put(self, idx: int) -> None:
        if idx < 0:
            raise FormatError("negative pickle memo index")
        self.memo[idx] = self.top()

    def _get(self, idx: int) -> None:
        if idx not in self.memo:
            raise FormatError(f"pickle memo key {idx} missing")
        self.stack.append(self.memo[idx])

    def op_PUT(self) -> None:
        self._put(int(self.readline()))

    def op_BINPUT(self) -> None:
        self._put(self.byte())

    def op_LONG_BINPUT(self) -> None:
        self._put(self.unpack(_U32))

    def op_MEMOIZE(self) -> None:
        self._put(len(self.memo))

    def op_GET(self) -> None:
        self._get(int(self.readline()))

    def op_BINGET(self) -> None:
        self._get(self.byte())

    def op_LONG_BINGET(self) -> None:
        self._get(self.unpack(_U32))

    # ---- objects ----------------------------------------------------------------------------
    def _global(self, module: Any, name: Any) -> Global:
        if not isinstance(module, str) or not isinstance(name, str):
            raise FormatError("pickle global names are not strings")
        return Global(_MODULE_ALIASES.get(module, module), name)

    def op_GLOBAL(self) -> None:
        module = self.readline().decode("utf-8")
        self.stack.append(self._global(module, self.readline().decode("utf-8")))

    def op_STACK_GLOBAL(self) -> None:
        name = self.pop()
        self.stack.append(self._global(self.pop(), name))

    def op_EXT1(self) -> None:
        raise FormatError("pickle uses the extension registry")

    op_EXT2 = op_EXT4 = op_EXT1

    def op_REDUCE(self) -> None:
        args = self.pop()
        self.stack.append(self.call(self.pop(), args))

    def op_NEWOBJ(self) -> None:
        args = self.pop()
        self.stack.append(self.call(self.pop(), args))

    def op_NEWOBJ_EX(self) -> None:
        kwargs = self.pop()
        args = self.pop()
        self.stack.append(self.call(self.pop(), args, kwargs))

    def op_INST(self) -> None:
        module = self.readline().decode("utf-8")
        cls = self._global(module, self.readline().decode("utf-8"))
        args = tuple(self.pop_mark())
        self.stack.append(self.call(cls, args))

    def op_OBJ(self) -> None:
        items = self.pop_mark()
        if not items:
            raise FormatError("pickle OBJ without a class")
        self.stack.append(self.call(items[0], tuple(items[1:])))

    def op_BUILD(self) -> None:
        state = self.pop()
        obj = self.top()
        if isinstance(obj, Call) and obj.state is None:
            obj.state = state
        else:
            self.stack[-1] = Build(obj, state)

    def op_PERSID(self) -> None:
        self.stack.append(PersistentRef(self.readline().decode("ascii")))

    def op_BINPERSID(self) -> None:
        pid = self.pop()
        self.stack.append(self.hashable(PersistentRef(pid), [pid]))


_OPCODES: dict[str, int] = {
    "MARK": 0x28, "STOP": 0x2E, "POP": 0x30, "POP_MARK": 0x31, "DUP": 0x32, "FLOAT": 0x46,
    "INT": 0x49, "BININT": 0x4A, "BININT1": 0x4B, "LONG": 0x4C, "BININT2": 0x4D, "NONE": 0x4E,
    "PERSID": 0x50, "BINPERSID": 0x51, "REDUCE": 0x52, "STRING": 0x53, "BINSTRING": 0x54,
    "SHORT_BINSTRING": 0x55, "UNICODE": 0x56, "BINUNICODE": 0x58, "APPEND": 0x61, "BUILD": 0x62,
    "GLOBAL": 0x63, "DICT": 0x64, "EMPTY_DICT": 0x7D, "APPENDS": 0x65, "GET": 0x67,
    "BINGET": 0x68, "INST": 0x69, "LONG_BINGET": 0x6A, "LIST": 0x6C, "EMPTY_LIST": 0x5D,
    "OBJ": 0x6F, "PUT": 0x70, "BINPUT": 0x71, "LONG_BINPUT": 0x72, "SETITEM": 0x73, "TUPLE": 0x74,
    "EMPTY_TUPLE": 0x29, "SETITEMS": 0x75, "BINFLOAT": 0x47, "PROTO": 0x80, "NEWOBJ": 0x81,
    "EXT1": 0x82, "EXT2": 0x83, "EXT4": 0x84, "TUPLE1": 0x85, "TUPLE2": 0x86, "TUPLE3": 0x87,
    "NEWTRUE": 0x88, "NEWFALSE": 0x89, "LONG1": 0x8A, "LONG4": 0x8B, "BINBYTES": 0x42,
    "SHORT_BINBYTES": 0x43, "SHORT_BINUNICODE": 0x8C, "BINUNICODE8": 0x8D, "BINBYTES8": 0x8E,
    "EMPTY_SET": 0x8F, "ADDITEMS": 0x90, "FROZENSET": 0x91, "NEWOBJ_EX": 0x92,
    "STACK_GLOBAL": 0x93, "MEMOIZE": 0x94, "FRAME": 0x95, "BYTEARRAY8": 0x96,
    "NEXT_BUFFER": 0x97, "READONLY_BUFFER": 0x98,
}  # fmt: skip
_OPNAMES = {v: k for k, v in _OPCODES.items()}
_DISPATCH: dict[int, Callable[[_Machine], None]] = {
    code: getattr(_Machine, f"op_{name}") for name, code in _OPCODES.items()
}


def parse_pickle(data: bytes | bytearray | memoryview, *, max_ops: int = MAX_OPS) -> Any:
    """Interpret one pickle symbolically and return its root value; raise FormatError if invalid."""
    if len(data) > MAX_PICKLE_BYTES:
        raise FormatError(f"pickle larger than {MAX_PICKLE_BYTES} bytes")
    return _Machine(bytes(data), max_ops).run()


# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorRef:
    """One tensor of the pickle: a view (offset, shape, stride in elements) of a storage."""

    name: str
    storage_key: str
    dtype: str
    storage_offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool


@dataclass(frozen=True, slots=True)
class StorageInfo:
    """One storage: ``numel`` elements of ``dtype`` (``numel * DTYPE_BITS[dtype] == 8 * nbytes``).

    ``nbytes`` is None when the element size is unknown (then ``dtype`` is ``U8`` and ``numel``
    is the raw count from the pickle). ``first_name`` is the first tensor (in pickle order) that
    views the storage, or None when only a bare storage object references it.
    """

    key: str
    dtype: str
    numel: int
    first_name: str | None
    nbytes: int | None


# torch dtype name -> (dtype code, bytes per torch element)
_TORCH_DTYPES: dict[str, tuple[str, int]] = {
    "float32": ("F32", 4), "float": ("F32", 4), "float64": ("F64", 8), "double": ("F64", 8),
    "float16": ("F16", 2), "half": ("F16", 2), "bfloat16": ("BF16", 2),
    "int64": ("I64", 8), "long": ("I64", 8), "int32": ("I32", 4), "int": ("I32", 4),
    "int16": ("I16", 2), "short": ("I16", 2), "int8": ("I8", 1), "uint8": ("U8", 1),
    "uint16": ("U16", 2), "uint32": ("U32", 4), "uint64": ("U64", 8), "bool": ("BOOL", 1),
    "complex32": ("C32", 4), "chalf": ("C32", 4), "complex64": ("C64", 8), "cfloat": ("C64", 8),
    "complex128": ("C128", 16), "cdouble": ("C128", 16),
    "float8_e4m3fn": ("F8_E4M3", 1), "float8_e5m2": ("F8_E5M2", 1),
    "float8_e4m3fnuz": ("F8_E4M3FNUZ", 1), "float8_e5m2fnuz": ("F8_E5M2FNUZ", 1),
    "float8_e8m0fnu": ("F8_E8M0", 1), "float4_e2m1fn_x2": ("F4", 1),
    "qint8": ("QI8", 1), "quint8": ("QU8", 1), "qint32": ("QI32", 4),
    "quint4x2": ("U8", 1), "quint2x4": ("U8", 1),
    "bits1x8": ("U8", 1), "bits2x4": ("U8", 1), "bits4x2": ("U8", 1), "bits8": ("U8", 1),
    "bits16": ("U16", 2),
}  # fmt: skip

# legacy typed storage class -> torch dtype name
_STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8", "QUInt8Storage": "quint8", "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
}  # fmt: skip

_TENSOR_V2 = {("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor")}
_TENSOR_V3 = ("torch._utils", "_rebuild_tensor_v3")
_QTENSOR = ("torch._utils", "_rebuild_qtensor")
_PARAMETER = {
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn", "Parameter"),
}
_FROM_TYPE = {("torch._tensor", "_rebuild_from_type_v2"), ("torch._tensor", "_rebuild_from_type")}
_MODULE_SLOTS = ("_parameters", "_buffers", "_modules")  # nn.Module attributes named transparently


def _dtype_name(obj: Any) -> str | None:
    """``Global('torch', 'float32')`` -> 'float32'; legacy storage classes map to their dtype."""
    if isinstance(obj, Global) and obj.module.split(".")[0] == "torch":
        return _STORAGE_DTYPES.get(obj.name, obj.name)
    return None


def _code(dtype_name: str | None) -> tuple[str, int] | None:
    return _TORCH_DTYPES.get(dtype_name) if dtype_name else None


@dataclass(slots=True)
class _Storage:
    key: str
    pid_numel: int
    typed: tuple[str, int] | None  # (code, element bytes) when the storage itself carries a dtype
    untyped: bool
    dtype: str | None = None  # from the first tensor viewing an untyped storage
    first_name: str | None = None

    def info(self) -> StorageInfo:
        if self.typed is not None:
            code, size = self.typed
            nbytes: int | None = self.pid_numel * size
        elif self.untyped:
            code, nbytes = self.dtype or "U8", self.pid_numel
        else:
            return StorageInfo(self.key, "U8", self.pid_numel, self.first_name, None)
        bits = DTYPE_BITS.get(code, 8)
        if (nbytes * 8) % bits:
            code, bits = "U8", 8
        return StorageInfo(self.key, code, nbytes * 8 // bits, self.first_name, nbytes)


def _is_int_tuple(x: Any) -> bool:
    return isinstance(x, tuple) and all(type(i) is int for i in x)


class _Finder:
    def __init__(self) -> None:
        self.refs: list[TensorRef] = []
        self.storages: dict[str, _Storage] = {}
        self.names: dict[str, int] = {}

    def storage(self, ref: Any) -> _Storage | None:
        pid = ref.pid if isinstance(ref, PersistentRef) else None
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            return None
        key, numel = pid[2], pid[4]
        if type(key) is int:
            key = str(key)
        if not isinstance(key, str) or type(numel) is not int or numel < 0:
            raise FormatError("malformed torch storage id in pickle")
        stype = pid[1]
        untyped = isinstance(stype, Global) and stype.name in ("UntypedStorage", "_UntypedStorage")
        typed = None if untyped else _code(_dtype_name(stype))
        old = self.storages.get(key)
        if old is None:
            old = self.storages[key] = _Storage(key, numel, typed, untyped)
        elif (old.pid_numel, old.typed, old.untyped) != (numel, typed, untyped):
            raise FormatError(f"storage {key!r} is described inconsistently")
        return old

    def tensor(self, node: Call, name: str) -> bool:
        """Record ``node`` as a tensor named ``name`` if it is one; False if it is not."""
        requires_grad: Any = None
        for _ in range(8):  # unwrap Parameter / subclass wrappers
            func = node.func
            key = (func.module, func.name) if isinstance(func, Global) else None
            args = node.args
            if key in _PARAMETER and args and isinstance(args[0], Call):
                if requires_grad is None and len(args) > 1:
                    requires_grad = args[1]
                node = args[0]
            elif key in _FROM_TYPE and len(args) >= 3 and isinstance(args[2], tuple):
                node = Call(args[0], args[2])
            else:
                break
        if key in _TENSOR_V2 or key == _QTENSOR:
            min_args, dtype = 4, None
        elif key == _TENSOR_V3:
            min_args, dtype = 7, _code(_dtype_name(args[6])) if len(args) > 6 else None
        else:
            return False
        if len(args) < min_args or type(args[1]) is not int:
            return False
        if not (_is_int_tuple(args[2]) and _is_int_tuple(args[3])):
            return False
        storage = self.storage(args[0])
        if storage is None:
            return False
        if requires_grad is None:
            requires_grad = args[5 if key == _QTENSOR else 4] if len(args) > 4 else False
        if dtype is None:
            dtype = storage.typed
        code = dtype[0] if dtype else "U8"
        if storage.untyped:
            if storage.dtype is None:
                storage.dtype = code
            elif storage.dtype != code:
                storage.dtype = "U8"
        if dtype and key != _QTENSOR:
            elems = storage.pid_numel if storage.typed else storage.pid_numel // dtype[1]
            if not _view_fits(args[1], args[2], args[3], elems):
                raise FormatError(f"tensor {name!r} views outside its storage")
        unique = unique_name(name, self.names)
        if storage.first_name is None:
            storage.first_name = unique
        self.refs.append(TensorRef(unique, storage.key, code, args[1], args[2], args[3], requires_grad is True))
        return True


def _view_fits(offset: int, shape: tuple[int, ...], stride: tuple[int, ...], elems: int) -> bool:
    """Whether an (offset, shape, stride) view stays inside a storage of ``elems`` elements."""
    if offset < 0 or len(shape) != len(stride) or any(d < 0 for d in shape) or any(s < 0 for s in stride):
        return False
    if 0 in shape:
        return offset <= elems
    return offset + sum((d - 1) * s for d, s in zip(shape, stride, strict=True)) < elems


def unique_name(name: str, taken: dict[str, int]) -> str:
    """``name``, or ``name~2``, ``name~3`` ... if taken; records the result in ``taken``."""
    unique = name
    while unique in taken:
        taken[name] += 1
        unique = f"{name}~{taken[name]}"
    taken.setdefault(name, 1)
    taken[unique] = 1
    return unique


def _component(key: Any, index: int) -> str:
    if isinstance(key, (str, float, bytes)) or key is None:
        return str(key)
    if isinstance(key, int) and key.bit_length() < 256:
        return str(key)
    return f"#{index}"


def _children(node: Any) -> Iterator[tuple[Any, str | None]]:
    """The sub-values of ``node`` with their path component (None: same path), in pickle order."""
    if isinstance(node, dict):
        module_like = "training" in node and any(k in node for k in _MODULE_SLOTS)
        for i, (k, v) in enumerate(node.items()):
            if module_like and k in _MODULE_SLOTS and isinstance(v, dict):
                yield v, None
            else:
                yield k, None
                yield v, _component(k, i)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield v, str(i)
    elif isinstance(node, Call):
        yield node.func, None
        for i, v in enumerate(node.args):
            yield v, str(i)
        yield node.kwargs, None
        yield node.state, None
        for i, v in enumerate(node.listitems):
            yield v, str(i)
        for i, (k, v) in enumerate(node.dictitems):
            yield k, None
            yield v, _component(k, i)
    elif isinstance(node, Build):
        yield node.obj, None
        yield node.state, None


_EXIT = object()
_WALKED = (dict, list, tuple, Call, Build)


def find_tensors(tree: Any) -> tuple[list[TensorRef], dict[str, StorageInfo]]:
    """Every tensor in a symbolic torch pickle, named by dotted path, plus the storages they view.

    Traversal is iterative and depth-first in pickle order; shared sub-trees are visited once per
    path (at most MAX_VISITS nodes), cycles are cut, and sets are not entered (their order is not
    deterministic). Names are cut to MAX_NAME characters and made unique with a ``~2``, ``~3``
    ... suffix. A tensor that is the whole pickle is named ``tensor``.
    """
    finder = _Finder()
    todo: list[Any] = [(tree, "", None)]
    on_path: set[int] = set()
    visits = 0
    while todo:
        item = todo.pop()
        if item is _EXIT:
            on_path.discard(todo.pop())
            continue
        node, parent, comp = item
        visits += 1
        if visits > MAX_VISITS:
            raise FormatError("pickle object graph too large to walk")
        if isinstance(node, PersistentRef):
            finder.storage(node)
            continue
        if not isinstance(node, _WALKED) or id(node) in on_path:
            continue
        path = parent if comp is None else f"{parent}.{comp}" if parent else comp
        path = path[:MAX_NAME]
        if isinstance(node, Call) and finder.tensor(node, path or "tensor"):
            continue
        on_path.add(id(node))
        todo += [id(node), _EXIT]
        todo += reversed([(child, path, c) for child, c in _children(node)])
    return finder.refs, {k: s.info() for k, s in finder.storages.items()}
