"""Pointers and stored bytes are pinned: the same model file gives the same pointer text and the same store
objects in every version of coral-git (a change here is a format change: docs/format.md, and a new version)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from coral_git.core import pointer as ptr
from coral_git.filter.clean import clean
from coral_git.filter.smudge import smudge
from coral_git.store.chunkstore import ChunkStore

PINNED_POINTER = """\
coral-pointer 2
file 93648 safetensors 8921ab738e5c7e6cc3c6362fbc90c130
chunking 16384
skeleton 328 91e184f1cd7d3c111fcca3e0c7f29814
tensor step I64 [1] 328 8 deb6d224c549cbd3e8c0d782b2f61276
tensor embed.weight F32 [300,64] 336 76800 9fdc129d07dcbfcad4ec71cc9be9881a,ebd3b84d1e91a369cee21a75328f35d5,\
f61480acf85fcf680c47b3339b66e641,efaacffe8f742ac493f74fd5ac99048f,4ff1dca90280e7bfffccb90ba8cd5481
tensor layers.0.weight F32 [64,64] 77136 16384 38f22936cd86e1a6813ed189b3b81396
tensor layers.0.bias F16 [64] 93520 128 70202c86ee9a32c9744cc3a788ffff3b
check cf6cbbf3e25549045f7e8fcb1004f97e
"""
PINNED_FILE_SHA256 = "ecccc419fde7cc9d9f6c89f73aac58c4660a374bcd41981826f10cd10e8ecb3c"
PINNED_V2_POINTER_SHA256 = "ba1e9970bbe41becfc5bbaf8854ab10cb620df84be6fdfd1684e50ffb94bc397"
PINNED_STORE_SHA256 = "f796e78ec756290f40a093b377a264795c5cd638bc71954e70abe0cc943592d8"


def model(seed: int = 1234, nudge: bool = False) -> bytes:
    """A small safetensors file from a fixed seed (the same bytes on every machine)."""
    rng = np.random.default_rng(seed)
    state = {
        "embed.weight": rng.standard_normal((300, 64)).astype(np.float32),
        "layers.0.bias": rng.standard_normal(64).astype(np.float16),
        "layers.0.weight": rng.standard_normal((64, 64)).astype(np.float32),
        "step": np.array([7], dtype=np.int64),
    }
    if nudge:  # a training step: a few rows of one tensor change (stored as a delta of the first version)
        state["embed.weight"][:40] += np.float32(1e-3)
        state["step"][0] = 8
    return save(state, metadata={"format": "pt"})


def store_digest(root: Path) -> str:
    """sha256 over every object file of the store: relative path and bytes, in path order."""
    h = hashlib.sha256()
    for p in sorted((root / "objects").rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_pointer_and_store_bytes_are_pinned(tmp_path: Path) -> None:
    data = model()
    assert hashlib.sha256(data).hexdigest() == PINNED_FILE_SHA256  # the generator itself is stable
    store = ChunkStore(tmp_path / "store")
    p1 = clean(data, store, chunk_bytes=16384).pointer
    assert p1.encode().decode() == PINNED_POINTER
    assert ptr.parse(PINNED_POINTER.encode()) == p1
    p2 = clean(model(nudge=True), store, previous=p1, chunk_bytes=16384).pointer
    assert hashlib.sha256(p2.encode()).hexdigest() == PINNED_V2_POINTER_SHA256
    assert store_digest(tmp_path / "store") == PINNED_STORE_SHA256
    for p, want in ((p1, data), (p2, model(nudge=True))):
        out = bytearray()
        smudge(p, store, out.extend)
        assert bytes(out) == want
