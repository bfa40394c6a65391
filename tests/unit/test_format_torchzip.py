"""The torch zip reader on files written by real ``torch.save``, hostile pickles and broken zips."""

from __future__ import annotations

import io
import os
import pickle
import random
import struct
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import pytest

from coral_git.errors import FormatError
from coral_git.formats import torchzip
from coral_git.formats.layout import DTYPE_BITS, Layout

torch = pytest.importorskip("torch")


def save(obj: Any, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    torch.save(obj, out, **kwargs)
    return out.getvalue()


def storage_bytes(t: Any) -> bytes:
    return bytes(t.untyped_storage())


def reassemble(buf: bytes, layout: Layout) -> bytes:
    pieces = [(s, e) for s, e in layout.gaps()] + [(t.offset, t.end) for t in layout.tensors]
    return b"".join(buf[s:e] for s, e in sorted(pieces))


def check(buf: bytes, named: dict[str, Any]) -> Layout:
    """``named``: span name -> the tensor whose whole storage the span must hold."""
    layout = torchzip.read(buf)
    assert layout.format == "torch-zip" and layout.size == len(buf)
    assert reassemble(buf, layout) == buf
    spans = {t.name: t for t in layout.tensors}
    assert sorted(spans) == sorted(named)
    for name, tensor in named.items():
        span = spans[name]
        assert buf[span.offset : span.end] == storage_bytes(tensor), name
        assert span.nbytes == tensor.untyped_storage().nbytes()
        assert span.shape[0] * DTYPE_BITS[span.dtype] == 8 * span.nbytes
    return layout


def small_model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))


def test_probe() -> None:
    assert torchzip.probe(memoryview(save({"a": torch.ones(2)})))
    assert not torchzip.probe(memoryview(b"\x80\x02}q\x00."))
    assert not torchzip.probe(memoryview(b"PK"))
    legacy = save({"a": torch.ones(2)}, _use_new_zipfile_serialization=False)
    assert not torchzip.probe(memoryview(legacy))


def test_state_dict() -> None:
    sd = small_model().state_dict()
    buf = save(sd)
    layout = check(buf, dict(sd))
    dtypes = {t.name: t.dtype for t in layout.tensors}
    assert dtypes["0.weight"] == "F32" and dtypes["1.num_batches_tracked"] == "I64"
    assert {t.name: t.shape for t in layout.tensors}["0.weight"] == (12,)
    refs, storages = torchzip.read_tensor_refs(buf)
    assert [r.name for r in refs] == list(sd)
    w = next(r for r in refs if r.name == "0.weight")
    assert (w.dtype, w.shape, w.stride, w.storage_offset, w.requires_grad) == ("F32", (3, 4), (4, 1), 0, False)
    assert storages[w.storage_key].first_name == "0.weight"


def test_training_checkpoint() -> None:
    model = small_model()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    osd = opt.state_dict()
    ckpt = {"model": model.state_dict(), "optimizer": osd, "epoch": 3}
    buf = save(ckpt)
    named = {f"model.{k}": v for k, v in ckpt["model"].items()}
    for idx, state in osd["state"].items():
        named.update({f"optimizer.state.{idx}.{k}": v for k, v in state.items()})
    check(buf, named)
    refs, _ = torchzip.read_tensor_refs(buf)
    names = [r.name for r in refs]
    assert "optimizer.state.0.exp_avg" in names and "optimizer.state.5.exp_avg_sq" in names
    assert next(r for r in refs if r.name == "optimizer.state.0.step").shape == ()


def test_half_precision_and_views() -> None:
    x = torch.arange(100.0)
    obj = {
        "bf": torch.randn(3, 5).to(torch.bfloat16),
        "fp16": torch.randn(7).half(),
        "a": x,
        "b": x[10:20],
        "c": x.view(10, 10)[:, 2],
    }
    buf = save(obj)
    layout = check(buf, {"bf": obj["bf"], "fp16": obj["fp16"], "a": x})
    assert {t.name: t.dtype for t in layout.tensors} == {"bf": "BF16", "fp16": "F16", "a": "F32"}
    refs, storages = torchzip.read_tensor_refs(buf)
    by = {r.name: r for r in refs}
    assert by["b"].storage_key == by["a"].storage_key == by["c"].storage_key
    assert (by["b"].storage_offset, by["b"].shape) == (10, (10,))
    assert (by["c"].storage_offset, by["c"].shape, by["c"].stride) == (2, (10,), (10,))
    assert storages[by["a"].storage_key].numel == 100


def test_view_named_first_in_pickle_order() -> None:
    x = torch.arange(10.0)
    layout = check(save({"slice": x[2:5], "whole": x}), {"slice": x})
    assert layout.tensors[0].shape == (10,)


EXPECTED = {
    "float32": "F32", "float64": "F64", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
    "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "complex64": "C64",
    "complex128": "C128", "complex32": "C32", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",
    "float8_e4m3fnuz": "F8_E4M3FNUZ", "float8_e5m2fnuz": "F8_E5M2FNUZ", "float8_e8m0fnu": "F8_E8M0",
    "float4_e2m1fn_x2": "F4", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "bits8": "U8", "bits16": "U16", "bits1x8": "U8", "bits2x4": "U8", "bits4x2": "U8",
    "qint8": "QI8", "quint8": "QU8", "qint32": "QI32", "quint4x2": "U8", "quint2x4": "U8",
}  # fmt: skip


def test_every_dtype_torch_can_save() -> None:
    dtypes = sorted({v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str)
    tensors: dict[str, Any] = {}
    for dtype in dtypes:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                size = torch.empty(0, dtype=dtype).element_size()
                raw = torch.frombuffer(bytearray(os.urandom(6 * size)), dtype=torch.uint8)
                t = (raw % 2).view(dtype) if dtype == torch.bool else raw.view(dtype)
                save(t)
            except Exception:
                continue  # quantized, int1..int7, uint1..uint7: torch itself refuses
        tensors[str(dtype).removeprefix("torch.")] = t
    assert {"float32", "bfloat16", "float8_e4m3fn", "uint16", "complex128"} <= set(tensors)
    assert set(tensors) <= set(EXPECTED), "torch can save a dtype this test does not know"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buf = save(tensors)
    layout = check(buf, tensors)
    assert {t.name: t.dtype for t in layout.tensors} == {k: EXPECTED[k] for k in tensors}
    refs, _ = torchzip.read_tensor_refs(buf)
    assert {r.name: r.dtype for r in refs} == {k: EXPECTED[k] for k in tensors}


def test_nested_lists_full_module_and_parameters() -> None:
    t = [torch.ones(i + 1) * i for i in range(4)]
    buf = save({"nested": [[t[0], t[1]], [t[2], [t[3]]]], "n": 5})
    check(buf, {"nested.0.0": t[0], "nested.0.1": t[1], "nested.1.0": t[2], "nested.1.1.0": t[3]})
    model = small_model()
    buf = save(model)
    check(buf, dict(model.state_dict()))
    refs, _ = torchzip.read_tensor_refs(buf)
    assert {r.name: r.requires_grad for r in refs}["0.weight"] is True
    assert {r.name: r.requires_grad for r in refs}["1.running_mean"] is False
    p = torch.nn.Parameter(torch.ones(3))
    p.tag = "x"  # forces _rebuild_parameter_with_state
    check(save({"p": p}), {"p": p})
    check(save(torch.ones(4)), {"tensor": torch.ones(4)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(torch.randn(6), 0.1, 3, torch.quint8)
    layout = check(save({"q": q}), {"q": q})
    assert layout.tensors[0].dtype == "QU8"


def test_shared_tensor_and_empty_and_unreferenced() -> None:
    w = torch.randn(4)
    refs, storages = torchzip.read_tensor_refs(save({"enc": w, "dec": w}))
    assert [r.name for r in refs] == ["enc", "dec"] and len(storages) == 1
    # an empty storage is listed too (zero bytes, no chunks), so every tensor of the file has a line
    layout = check(save({"e": torch.empty(0), "x": torch.ones(2)}), {"e": torch.empty(0), "x": torch.ones(2)})
    assert [t.nbytes for t in layout.tensors] == [0, 8]
    s = torch.ones(3).untyped_storage()
    layout = torchzip.read(save({"raw": s}))
    assert [t.name for t in layout.tensors] == ["storage/0"] and layout.tensors[0].dtype == "U8"


def rewrite(buf: bytes, compress: set[str] = frozenset(), pkl: bytes | None = None) -> bytes:
    """Copy a torch zip entry by entry with Python's zipfile (optionally deflating some entries)."""
    src = zipfile.ZipFile(io.BytesIO(buf))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = pkl if pkl is not None and info.filename.endswith("data.pkl") else src.read(info)
            method = zipfile.ZIP_DEFLATED if info.filename in compress else zipfile.ZIP_STORED
            dst.writestr(zipfile.ZipInfo(info.filename), data, compress_type=method)
    return out.getvalue()


def test_compressed_records_stay_in_skeleton() -> None:
    sd = {"a": torch.zeros(100), "b": torch.randn(10)}
    buf = rewrite(save(sd), compress={"archive/data.pkl", "archive/data/0"})
    layout = check(buf, {"b": sd["b"]})
    assert [t.name for t in layout.tensors] == ["b"]


def test_zip64_structures(monkeypatch: pytest.MonkeyPatch) -> None:
    sd = {"a": torch.randn(10), "b": torch.randn(3, 3).double()}
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 0)
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 1)
    buf = rewrite(save(sd))
    assert b"PK\x06\x06" in buf and b"PK\x06\x07" in buf
    check(buf, sd)


def make_zip(pkl: bytes, records: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", pkl)
        for key, data in (records or {}).items():
            z.writestr(f"archive/data/{key}", data)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


class Evil:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.cmd,))


def test_hostile_pickle_is_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    raw = b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd.encode() + b"\x85R."
    for pkl in (raw, pickle.dumps({"x": Evil(cmd)}, protocol=2), pickle.dumps([Evil(cmd)], protocol=5)):
        buf = make_zip(pkl, {"0": b"\0" * 8})
        try:
            layout = torchzip.read(buf)
        except FormatError:
            pass
        else:
            assert layout.tensors == () and reassemble(buf, layout) == buf
        torchzip.read_tensor_refs(buf)
    assert not marker.exists()


def test_hostile_tensor_claims() -> None:
    def tensor_pickle(numel: int, key: str = "0", offset: int = 0) -> bytes:
        return (
            b"\x80\x02}X\x01\x00\x00\x00actorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage"
            b"ctorch\nFloatStorage\nX" + struct.pack("<I", len(key)) + key.encode() + b"X\x03\x00\x00\x00cpu"
            b"J" + struct.pack("<i", numel) + b"tQK" + bytes([offset]) + b"K\x02\x85K\x01\x85\x89NtRs."
        )

    layout = torchzip.read(make_zip(tensor_pickle(2), {"0": b"\1" * 8}))
    assert [(t.name, t.nbytes, t.dtype) for t in layout.tensors] == [("a", 8, "F32")]
    with pytest.raises(FormatError, match="bytes"):
        torchzip.read(make_zip(tensor_pickle(3), {"0": b"\1" * 8}))  # numel x itemsize != record size
    with pytest.raises(FormatError, match="no data record"):
        torchzip.read(make_zip(tensor_pickle(2, key="../../etc/passwd"), {"0": b"\1" * 8}))
    with pytest.raises(FormatError):
        torchzip.read(make_zip(tensor_pickle(-5), {"0": b"\1" * 8}))
    with pytest.raises(FormatError, match="outside"):
        torchzip.read_tensor_refs(make_zip(tensor_pickle(2, offset=1), {"0": b"\1" * 8}))


@pytest.mark.parametrize(
    "pkl",
    [
        b"\x80\x02X\xff\xff\xff\xff.",  # string claiming 4 GiB
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x10N.",  # frame claiming 2^60 bytes
        b"\x80\x02}q\x00(X\x01\x00\x00\x00a",  # truncated
        b"garbage",
    ],
)
def test_bad_pickle_in_zip(pkl: bytes) -> None:
    with pytest.raises(FormatError):
        torchzip.read(make_zip(pkl))


def assert_fails_fast(buf: bytes) -> None:
    start = time.process_time()
    with pytest.raises(FormatError):
        torchzip.read(buf)
    assert time.process_time() - start < 2.0  # CPU time, generous for busy machines


def test_truncated_and_garbage_zips() -> None:
    buf = save(small_model().state_dict())
    for cut in (0, 3, 30, len(buf) // 2, len(buf) - 23, len(buf) - 1):
        assert_fails_fast(buf[:cut])
    assert_fails_fast(buf[:1000] + buf[2000:])
    eocd = buf.rindex(b"PK\x05\x06")
    (cd_offset,) = struct.unpack_from("<L", buf, eocd + 16)
    rng = random.Random(1)
    garbage = bytes(rng.randrange(256) for _ in range(eocd - cd_offset))
    assert_fails_fast(buf[:cd_offset] + garbage + buf[eocd:])
    plain = make_zip(b"N.")  # Python's zipfile writes no zip64 records (torch always does)
    absurd = b"PK\x05\x06" + b"\0" * 4 + b"\xff" * 12 + b"\0\0"  # 65535 entries, 4 GiB directory
    assert_fails_fast(plain[: plain.rindex(b"PK\x05\x06")] + absurd)
    rec64 = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, 2**60, 2**60, 2**62, 0)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, eocd, 1)
    assert_fails_fast(buf[:eocd] + rec64 + locator + buf[eocd:])  # zip64 record claiming 2^60 entries
    no_pkl = make_zip(b"N.").replace(b"data.pkl", b"data.pkx")
    assert_fails_fast(no_pkl)


def test_absurd_zip64_sizes() -> None:
    buf = bytearray(make_zip(b"\x80\x02N."))
    eocd = buf.rindex(b"PK\x05\x06")
    (cd_offset,) = struct.unpack_from("<L", buf, eocd + 16)
    struct.pack_into("<LL", buf, cd_offset + 20, 0xFFFFFFFF, 0xFFFFFFFF)  # sizes -> zip64, no extra
    assert_fails_fast(bytes(buf))
    buf = bytearray(make_zip(b"\x80\x02N."))
    struct.pack_into("<L", buf, cd_offset + 42, 0x7FFFFFFF)  # local header far past the end
    assert_fails_fast(bytes(buf))


def test_random_corruption_gives_layout_or_format_error() -> None:
    base = save({"a": torch.randn(16), "b": [torch.arange(4), {"c": torch.ones(2, dtype=torch.bfloat16)}]})
    rng = random.Random(7)
    for _ in range(300):
        buf = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        start = time.process_time()
        try:
            layout = torchzip.read(bytes(buf))
        except FormatError:
            pass
        else:
            assert reassemble(bytes(buf), layout) == bytes(buf)
        assert time.process_time() - start < 2.0  # CPU time, generous for busy machines


def test_accepts_mmap_and_memoryview(tmp_path: Path) -> None:
    import mmap

    sd = {"w": torch.randn(5, 5)}
    path = tmp_path / "ckpt.pt"
    torch.save(sd, path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        layout = torchzip.read(mm)
        assert torchzip.read(memoryview(mm)) == layout
        with pytest.raises(FormatError):
            torchzip.read(memoryview(mm)[:100])
        assert mm[layout.tensors[0].offset : layout.tensors[0].end] == storage_bytes(sd["w"])
