"""The .npy and .npz readers on files numpy writes, hostile headers, truncations and real git."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, new_repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_git.errors import FormatError
from coral_git.formats import npy
from coral_git.formats.layout import Layout
from coral_git.formats.registry import detect


def reassemble(buf: bytes, layout: Layout) -> bytes:
    pieces = [*layout.gaps(), *((t.offset, t.end) for t in layout.tensors)]
    return b"".join(buf[s:e] for s, e in sorted(pieces))


def save(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, arr)
    return out.getvalue()


def savez(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, **arrays)
    return out.getvalue()


DTYPES = ["<f4", "<f2", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "|b1", "<c8", "<c16"]
CODES = ["F32", "F16", "F64", "I8", "U8", "I16", "U16", "I32", "U32", "I64", "U64", "BOOL", "C64", "C128"]


@pytest.mark.parametrize(("descr", "code"), list(zip(DTYPES, CODES, strict=True)))
def test_every_plain_dtype(descr: str, code: str) -> None:
    arr = (np.arange(24) % 7).astype(descr).reshape(2, 3, 4)
    buf = save(arr)
    layout = npy.read(memoryview(buf))
    (t,) = layout.tensors
    assert (t.name, t.dtype, t.shape, t.nbytes) == ("array", code, (2, 3, 4), arr.nbytes)
    assert buf[t.offset : t.end] == arr.tobytes()
    assert reassemble(buf, layout) == buf


def test_fortran_bigendian_structured_and_objects() -> None:
    f = np.asfortranarray(np.arange(12, dtype="<f4").reshape(3, 4))
    (t,) = npy.read(memoryview(buf := save(f))).tensors
    assert t.shape == (4, 3) and buf[t.offset : t.end] == f.T.tobytes()
    for arr in (np.arange(5, dtype=">i4"), np.zeros(3, dtype=[("a", "<f4"), ("b", "|u1")]), np.array(["ab", "c"])):
        (t,) = npy.read(memoryview(buf := save(arr))).tensors
        assert (t.dtype, t.nbytes) == ("U8", arr.nbytes) and buf[t.offset : t.end] == arr.tobytes()
    pickled = save(np.array([1, "x", None], dtype=object))
    with pytest.raises(FormatError, match="never unpickled"):
        npy.read(memoryview(pickled))
    d = detect(memoryview(pickled))
    assert d.layout.format == "opaque" and "never unpickled" in (d.note or "")


def test_hostile_headers_stay_opaque() -> None:
    evil = b"{'descr': __import__('os').system('touch /tmp/coral-pwned'), 'fortran_order': False, 'shape': (1,)}"
    for header in (
        evil,
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
        b"{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}",
        b"{'descr': 'not a dtype', 'fortran_order': False, 'shape': (1,)}",
        b"{'descr': '<f4', 'fortran_order': False, 'shape': (10**30,)}",
        b"[" * 300 + b"]" * 300,
        b"\xff\xfe",
    ):
        buf = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + b"\x00" * 8
        with pytest.raises(FormatError):
            npy.read(memoryview(buf))
        assert detect(memoryview(buf)).layout.format == "opaque"
    assert not Path("/tmp/coral-pwned").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shape=st.lists(st.integers(0, 5), max_size=3),
    descr=st.sampled_from([*DTYPES, ">f4", "<M8[s]"]),
    fortran=st.booleans(),
    cut=st.integers(0, 400),
    flips=st.lists(st.tuples(st.integers(0, 400), st.integers(1, 255)), max_size=3),
)
def test_generated_npy_round_trip(shape: list[int], descr: str, fortran: bool, cut: int, flips: list) -> None:
    arr = np.zeros(shape, dtype=descr)
    buf = save(np.asfortranarray(arr) if fortran else arr)
    layout = detect(memoryview(buf)).layout
    assert layout.format == "npy" and reassemble(buf, layout) == buf
    damaged = bytearray(buf[: min(cut, len(buf))] if cut < len(buf) else buf)
    for at, x in flips:
        if at < len(damaged):
            damaged[at] ^= x
    d = detect(memoryview(bytes(damaged)))
    assert d.layout.size == len(damaged) and reassemble(bytes(damaged), d.layout) == bytes(damaged)


def test_npz_stored_and_deflated() -> None:
    arrays = {"w": np.arange(64, dtype="<f4").reshape(8, 8), "b": np.ones(3, np.int8), "deep/name": np.zeros(0)}
    buf = savez(**arrays)
    layout = detect(memoryview(buf)).layout
    assert layout.format == "npz" and reassemble(buf, layout) == buf
    spans = {t.name: t for t in layout.tensors}
    assert set(spans) == set(arrays)
    for k, a in arrays.items():
        assert (spans[k].shape, buf[spans[k].offset : spans[k].end]) == (a.shape, a.tobytes())
    cbuf = savez(True, **arrays)
    clayout = detect(memoryview(cbuf)).layout
    assert clayout.format == "npz" and reassemble(cbuf, clayout) == cbuf
    assert {t.name for t in clayout.tensors} == {"w.deflate", "b.deflate", "deep/name.deflate"}


def test_npz_objects_members_stay_in_skeleton_and_other_zips_are_not_npz() -> None:
    buf = savez(a=np.ones(4, "<f4"), o=np.array([{"x": 1}], dtype=object))
    layout = detect(memoryview(buf)).layout
    assert layout.format == "npz" and [t.name for t in layout.tensors] == ["a"]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("a.npy", save(np.ones(2)))
        z.writestr("readme.txt", "hi")
    assert detect(memoryview(out.getvalue())).layout.format == "opaque"


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 4),
    compressed=st.booleans(),
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=3),
)
def test_generated_npz_damage_keeps_every_byte(n: int, compressed: bool, cut: int, flips: list) -> None:
    buf = savez(compressed, **{f"a{i}": np.arange(i * 10, dtype="<f4") for i in range(n)})
    assert detect(memoryview(buf)).layout.format == "npz"
    damaged = bytearray(buf[:cut] if cut < len(buf) else buf)
    for at, x in flips:
        if at < len(damaged):
            damaged[at] ^= x
    d = detect(memoryview(bytes(damaged)))
    assert reassemble(bytes(damaged), d.layout) == bytes(damaged)


def test_end_to_end_git(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    assert "*.npy" in (repo / ".gitattributes").read_text() and "*.npz" in (repo / ".gitattributes").read_text()
    rng = np.random.default_rng(0)
    state = {f"layer{i}": rng.standard_normal((64, 64)).astype("<f4") for i in range(3)}
    (repo / "m.npz").write_bytes(v1 := savez(**state))
    (repo / "x.npy").write_bytes(x1 := save(state["layer0"]))
    git(repo, "add", "m.npz", "x.npy")
    git(repo, "commit", "-qm", "v1")
    shown = git(repo, "show", "HEAD:m.npz")
    assert shown.startswith("coral-pointer") and sum(line.startswith("tensor ") for line in shown.splitlines()) == 3
    assert "tensor array F32 [64,64]" in git(repo, "show", "HEAD:x.npy")
    state["layer1"] = state["layer1"] + np.float32(0.5)
    (repo / "m.npz").write_bytes(v2 := savez(**state))
    git(repo, "commit", "-qam", "v2")
    diff = coral(repo, "diff", "HEAD~1", "HEAD").stdout.decode()
    assert "layer1" in diff and "layer0" not in diff and "layer2" not in diff
    for rev, want in (("HEAD~1", v1), ("HEAD", v2)):
        (repo / "m.npz").unlink()
        git(repo, "checkout", "-q", rev, "--", "m.npz")
        assert (repo / "m.npz").read_bytes() == want
    (repo / "x.npy").unlink()
    git(repo, "checkout", "-q", "HEAD", "--", "x.npy")
    assert (repo / "x.npy").read_bytes() == x1
