"""A checkpoint's safetensors bytes written into a buffer kept from one save to the next.

``safetensors.torch.save`` returns a fresh ``bytes`` of the whole file: for a 1 GB model every
synchronous checkpoint paid ~0.7-1.5 s of page faults and copying on the training thread, most of
the stall beyond the clean itself. Here the header is built from what safetensors itself says (its
tensor order and dtype names, asked with empty tensors) and each tensor is one copy into a reused
buffer, so the bytes are exactly ``save``'s (a test compares them) and pointers do not change.
"""

from __future__ import annotations

import json

import numpy as np
import torch

_ALIGN = 8  # safetensors pads its JSON header with spaces to a multiple of 8 bytes


def _order(tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    """``{name: safetensors dtype}`` in the order safetensors lays the tensors out."""
    from safetensors.torch import save

    probe = save({k: torch.empty(0, dtype=t.dtype) for k, t in tensors.items()})
    n = int.from_bytes(probe[:8], "little")
    head = json.loads(probe[8 : 8 + n])
    return {k: v["dtype"] for k, v in head.items() if k != "__metadata__"}


def _raw(t: torch.Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a uint8 array (no copy)."""
    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.empty(0, dtype=np.uint8)


def save_into(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None, buf: bytearray | None = None) -> tuple[memoryview, bytearray]:
    """The bytes ``safetensors.torch.save(tensors, metadata)`` would return, written into ``buf`` (grown
    when too small); returns ``(view of the file's bytes, the buffer to pass next time)``. The view is
    valid until the buffer is reused. Tensors must be contiguous, on the CPU and not share storage."""
    order = _order(tensors)
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    at = 0
    for name, dtype in order.items():
        t = tensors[name]
        if t.device.type != "cpu" or not t.is_contiguous():
            raise ValueError(f"tensor {name} must be contiguous and on the CPU")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [at, at + nbytes]}
        at += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % _ALIGN)
    total = 8 + len(text) + at
    if buf is None or len(buf) < total:
        buf = bytearray(total)
    out = np.frombuffer(buf, dtype=np.uint8, count=total)
    out[:8] = np.frombuffer(len(text).to_bytes(8, "little"), dtype=np.uint8)
    out[8 : 8 + len(text)] = np.frombuffer(text, dtype=np.uint8)
    at = 8 + len(text)
    for name in order:
        raw = _raw(tensors[name])
        np.copyto(out[at : at + raw.size], raw)
        at += raw.size
    return memoryview(buf)[:total], buf
