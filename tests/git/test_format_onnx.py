"""The ONNX wire-format reader on models the ``onnx`` package writes, damaged files and real git."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, new_repo
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_git.errors import FormatError
from coral_git.formats import onnx as reader
from coral_git.formats.layout import Layout
from coral_git.formats.registry import detect

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def reassemble(buf: bytes, layout: Layout) -> bytes:
    pieces = [*layout.gaps(), *((t.offset, t.end) for t in layout.tensors)]
    return b"".join(buf[s:e] for s, e in sorted(pieces))


def mlp(weights: dict[str, np.ndarray], extra_nodes: list | None = None) -> bytes:
    """A chain of MatMul nodes over ``weights`` (as raw_data initializers)."""
    inits = [numpy_helper.from_array(w, name) for name, w in weights.items()]
    nodes, prev = [], "x"
    for i, name in enumerate(weights):
        nodes.append(helper.make_node("Identity", [name], [f"h{i}"], name=f"n{i}"))
        prev = f"h{i}"
    nodes += extra_nodes or []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits)).SerializeToString()


def check(buf: bytes) -> Layout:
    layout = reader.read(memoryview(buf))
    assert layout.format == "onnx" and layout.size == len(buf) and reassemble(buf, layout) == buf
    return layout


def test_initializers_float_data_constants_and_dtypes() -> None:
    rng = np.random.default_rng(0)
    weights = {
        "w32": rng.standard_normal((4, 3)).astype(np.float32),
        "w16": rng.standard_normal((2, 5)).astype(np.float16),
        "i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "u8": np.arange(7, dtype=np.uint8),
        "b": np.array([True, False]),
        "f64": np.ones(3),
    }
    const = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.arange(5, dtype=np.int32)), name="k")
    fdata = helper.make_node("Constant", [], ["d"], value=helper.make_tensor("fd", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]))
    buf = mlp(weights, [const, fdata])
    spans = {t.name: t for t in check(buf).tensors}
    want = {"w32": "F32", "w16": "F16", "i64": "I64", "u8": "U8", "b": "BOOL", "f64": "F64"}
    for name, code in want.items():
        t = spans[name]
        assert (t.dtype, t.shape) == (code, weights[name].shape)
        assert buf[t.offset : t.end] == weights[name].tobytes()
    assert spans["k/value"].dtype == "I32" and buf[spans["k/value"].offset : spans["k/value"].end] == np.arange(5, dtype=np.int32).tobytes()
    assert spans["fd"].dtype == "F32" and buf[spans["fd"].offset : spans["fd"].end] == np.array([1, 2, 3], np.float32).tobytes()
    assert detect(memoryview(buf)).layout.format == "onnx"


def test_subgraphs_and_external_data(tmp_path: Path) -> None:
    branch = lambda v: helper.make_graph(  # noqa: E731
        [helper.make_node("Constant", [], ["o"], value=numpy_helper.from_array(np.full(4, v, np.float32), f"c{v}"))],
        f"b{v}", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])],
    )  # fmt: skip
    node = helper.make_node("If", ["cond"], ["o"], then_branch=branch(1), else_branch=branch(2), name="if")
    cond = helper.make_tensor_value_info("cond", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])
    buf = helper.make_model(helper.make_graph([node], "g", [cond], [out])).SerializeToString()
    assert {t.name for t in check(buf).tensors} == {"c1", "c2"}
    model = onnx.load_from_string(mlp({"big": np.ones((64, 64), np.float32), "small": np.ones(2, np.float32)}))
    onnx.save_model(model, tmp_path / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=1024)  # fmt: skip
    layout = check((tmp_path / "m.onnx").read_bytes())
    assert [t.name for t in layout.tensors] == ["small"]  # "big" lives in m.onnx.data
    assert detect(memoryview((tmp_path / "m.onnx.data").read_bytes())).layout.format == "opaque"


@pytest.mark.parametrize(
    "buf",
    [b"\x08\x07", b"\x08\x07\x3a\x05abc", b"\x08\x07\x3a\x00\x3a\x00", b"\x08\x07\x3b", b"\x08\x07" + b"\x3a\xff" * 3,
     b"\x08\x07\x3a\x02\x2a\x05", b"\x08" + b"\x80" * 20, b"\x08\x07\x12\x00", b"\x08\x07\x38\x01"],
)  # fmt: skip
def test_malformed_is_opaque(buf: bytes) -> None:
    with pytest.raises(FormatError):
        reader.read(memoryview(buf))
    assert detect(memoryview(buf)).layout.format == "opaque"


DT = [np.float32, np.float16, np.int8, np.int64, np.float64, np.uint16]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(st.tuples(st.sampled_from(DT), st.lists(st.integers(0, 4), max_size=3)), max_size=4),
    cut=st.integers(0, 600),
    flips=st.lists(st.tuples(st.integers(0, 600), st.integers(1, 255)), max_size=3),
)
def test_generated_models_round_trip_and_damage_keeps_every_byte(specs, cut, flips) -> None:
    weights = {f"w{i}": np.full(shape, i + 1, dtype=dt) for i, (dt, shape) in enumerate(specs)}
    buf = mlp(weights)
    spans = {t.name: t for t in check(buf).tensors}
    for name, w in weights.items():
        if w.nbytes:
            assert buf[spans[name].offset : spans[name].end] == w.tobytes()
    damaged = bytearray(buf[:cut] if cut < len(buf) else buf)
    for at, x in flips:
        if at < len(damaged):
            damaged[at] ^= x
    got = detect(memoryview(bytes(damaged)))
    assert got.layout.size == len(damaged) and reassemble(bytes(damaged), got.layout) == bytes(damaged)


def test_end_to_end_git(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    assert "*.onnx filter=coral" in (repo / ".gitattributes").read_text()
    rng = np.random.default_rng(0)
    w = {f"layer{i}.weight": rng.standard_normal((32, 32)).astype(np.float32) for i in range(3)}
    (repo / "m.onnx").write_bytes(v1 := mlp(w))
    git(repo, "add", "m.onnx")
    git(repo, "commit", "-qm", "v1")
    shown = git(repo, "show", "HEAD:m.onnx")
    assert " onnx " in shown.splitlines()[1] and sum(x.startswith("tensor layer") for x in shown.splitlines()) == 3
    w["layer2.weight"] = w["layer2.weight"] * np.float32(1.01)
    (repo / "m.onnx").write_bytes(v2 := mlp(w))
    git(repo, "commit", "-qam", "v2")
    diff = coral(repo, "diff", "HEAD~1", "HEAD").stdout.decode()
    assert "layer2.weight" in diff and "layer0.weight" not in diff and "layer1.weight" not in diff
    for rev, want in (("HEAD~1", v1), ("HEAD", v2)):
        (repo / "m.onnx").unlink()
        git(repo, "checkout", "-q", rev, "--", "m.onnx")
        assert (repo / "m.onnx").read_bytes() == want


def test_field_budget_and_packed_dims_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = mlp({f"w{i}": np.ones(2, np.float32) for i in range(50)})
    assert len(check(buf).tensors) == 50
    monkeypatch.setattr(reader, "MAX_FIELDS", 100)
    with pytest.raises(FormatError, match="protobuf fields"):
        reader.read(memoryview(buf))
    monkeypatch.undo()
    dims = b"\x01" * 100_000  # one packed dims field with 100k varints
    tensor = b"\x0a" + bytes([0x80 | (len(dims) & 0x7F), 0x80 | ((len(dims) >> 7) & 0x7F), len(dims) >> 14]) + dims
    graph = b"\x2a" + bytes([0x80 | (len(tensor) & 0x7F), 0x80 | ((len(tensor) >> 7) & 0x7F), len(tensor) >> 14]) + tensor
    model = b"\x08\x07\x3a" + bytes([0x80 | (len(graph) & 0x7F), 0x80 | ((len(graph) >> 7) & 0x7F), len(graph) >> 14]) + graph
    with pytest.raises(FormatError, match="dims"):
        reader.read(memoryview(model))
