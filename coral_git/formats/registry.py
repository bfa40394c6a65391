"""Pick a container format by content: magic bytes and a header that parses, never the suffix alone."""

from __future__ import annotations

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


def _readers() -> list[ModuleType]:
    readers: list[ModuleType] = [safetensors]
    try:
        from . import torchzip
    except ImportError:  # pragma: no cover - the module ships with the package
        return readers
    readers.append(torchzip)
    readers.extend(_more_readers())
    return readers


def _more_readers() -> list[ModuleType]:
    """Formats v2, tried after the torch zip (an npz is a zip too) and in this order."""
    from . import gguf, npy, npz, onnx

    return [gguf, npy, npz, onnx]


def detect(buf: memoryview, log: Callable[[str], None] | None = None) -> Detected:
    """Return the layout of ``buf``: the first format whose probe and reader accept it, else opaque."""
    reasons: list[str] = []
    for reader in _readers():
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
