"""Checkpoint files written into reused buffers are byte for byte what ``safetensors.torch.save``
returns (so pointers do not depend on which writer made them), for every dtype and odd metadata."""

from __future__ import annotations

import torch
from safetensors import safe_open
from safetensors.torch import load, save

from coral_git.integrations.stwriter import save_into


def _tensors(seed: int, scale: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "b.weight": torch.randn(3 * scale, 4, generator=g),
        "a": torch.randn(2 * scale, generator=g).to(torch.bfloat16),
        "c": torch.arange(5 * scale),
        "d": torch.ones(1, dtype=torch.uint8),
        "e": torch.randn(2, 2, generator=g).half(),
        "empty": torch.zeros(0),
        "scalar": torch.tensor(1.5),
        "mask": torch.tensor([True, False, True]),
        "ünï": torch.randn(7, generator=g, dtype=torch.float64),
        "i32": torch.arange(3, dtype=torch.int32),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "i16": torch.arange(3, dtype=torch.int16),
    }


def test_same_bytes_as_safetensors_for_every_dtype_and_metadata() -> None:
    t = _tensors(0)
    # one metadata key, as checkpoints have: safetensors keeps several in a Rust HashMap, whose order
    # changes from process to process (save_into keeps the caller's order: deterministic)
    for meta in (None, {}, {"x": "y"}, {"state": '{"a": "q\\"b\\\\c\\nü\\u0001/"}'}, {"k2": "é\t"}):
        view, _ = save_into(t, meta)
        assert bytes(view) == save(t, metadata=meta or None)
    two = {"b": "1", "a": "2"}
    view, _ = save_into(t, two)
    n = int.from_bytes(view[:8], "little")
    assert bytes(view[8 : 8 + n]).startswith(b'{"__metadata__":{"b":"1","a":"2"}')
    assert safe_metadata(bytes(view)) == two


def test_a_reused_buffer_serves_larger_and_smaller_files() -> None:
    buf = None
    for seed, scale in ((1, 50), (2, 3), (3, 200), (4, 1)):
        t = _tensors(seed, scale)
        view, buf = save_into(t, {"seed": str(seed)}, buf)
        assert bytes(view) == save(t, metadata={"seed": str(seed)})
        back = load(bytes(view))
        assert all(torch.equal(back[k], v) for k, v in t.items())


def safe_metadata(data: bytes) -> dict[str, str]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "x.safetensors"
        f.write_bytes(data)
        with safe_open(str(f), framework="pt") as h:
            return h.metadata()
