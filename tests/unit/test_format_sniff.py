"""The registry imports a format's reader only when its sniff passes: every buffer a reader's probe
accepts must pass that sniff, or the format would silently never be detected."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from coral_git.formats.registry import _SNIFF, _reader

HEADS = [b"PK\x03\x04", b"GGUF\x03\x00\x00\x00", b"\x93NUMPY\x01\x00", b"\x08\x07", b"\x08\x41", b""]


def test_every_probe_implies_its_sniff() -> None:
    rng = np.random.default_rng(0)
    for name, sniff in _SNIFF:
        mod = _reader(name)
        for i in range(3000):
            head = HEADS[i % len(HEADS)]
            buf = memoryview(head + rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes())
            if mod.probe(buf):
                assert sniff(buf), (name, bytes(buf[:8]))


def test_detecting_safetensors_imports_no_other_reader(tmp_path) -> None:
    code = (
        "import sys, struct, json\n"
        "from coral_git.formats.registry import detect\n"
        "h = json.dumps({'a': {'dtype': 'F32', 'shape': [2], 'data_offsets': [0, 8]}}).encode()\n"
        "d = detect(memoryview(struct.pack('<Q', len(h)) + h + bytes(8)))\n"
        "assert d.layout.format == 'safetensors', d\n"
        "print(sorted(m for m in sys.modules if m.startswith('coral_git.formats.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True).stdout
    for other in ("torchzip", "pickle_reader", "gguf", "npy", "npz", "onnx"):
        assert f"coral_git.formats.{other}'" not in out, out
