"""Pick a container format by content: magic bytes and a header that parses, never the suffix alone."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from ..errors import FormatError
from . import opaque, safetensors
from .layout import Layout


@dataclass(frozen=True)
class Detected:
    """A layout plus, when the file fell back to opaque, why."""

    layout: Layout
    note: str | None = None


_ZIP = b"PK\x03\x04"
# the readers in the order they are tried (a torch zip before npz: an npz is a zip too), each with a
# necessary condition on the first bytes: a reader's module (pickle reader, zip walker, numpy for npy)
# is imported only when the file could be one of its kind, so a safetensors clean loads none of them.
# The module's own probe() still decides; the sniff only has to be implied by it.
_SNIFF: list[tuple[str, Callable[[memoryview], bool]]] = [
    ("safetensors", lambda b: True),
    ("torchzip", lambda b: bytes(b[:4]) == _ZIP),
    ("gguf", lambda b: bytes(b[:4]) == b"GGUF"),
    ("npy", lambda b: bytes(b[:6]) == b"\x93NUMPY"),
    ("npz", lambda b: bytes(b[:4]) == _ZIP),
    ("onnx", lambda b: len(b) >= 1 and b[0] == 0x08),
]


def _reader(name: str) -> ModuleType:
    return safetensors if name == "safetensors" else importlib.import_module(f"{__package__}.{name}")


def detect(buf: memoryview, log: Callable[[str], None] | None = None) -> Detected:
    """Return the layout of ``buf``: the first format whose probe and reader accept it, else opaque."""
    reasons: list[str] = []
    for name, sniff in _SNIFF:
        if not sniff(buf):
            continue
        reader = _reader(name)
        if not reader.probe(buf):
            continue
        try:
            return Detected(reader.read(buf))
        except FormatError as exc:
            reasons.append(f"not a valid {reader.FORMAT} file ({exc})")
        except (ValueError, OverflowError, MemoryError, RecursionError) as exc:
            reasons.append(f"not a valid {reader.FORMAT} file ({type(exc).__name__}: {exc})")
    note = "; ".join(reasons) if reasons else None
    return Detected(opaque.read(buf), note)
