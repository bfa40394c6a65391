"""An ONNX model with external data, through real git: both files tracked by init, byte-exact, and a
fine-tune of one initializer re-stores little of the data file (content-defined chunks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from helpers import git, new_repo
from onnx import TensorProto, helper, numpy_helper

from coral_git.core import pointer as ptr


def save(d: Path, weights: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    inits = [numpy_helper.from_array(w, n) for n, w in weights.items()]
    nodes = [helper.make_node("Identity", [n], [f"h{i}"], name=f"n{i}") for i, n in enumerate(weights)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info(f"h{len(weights) - 1}", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits))
    (d / "m.onnx.data").unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(model, str(d / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=1024)  # fmt: skip
    return (d / "m.onnx").read_bytes(), (d / "m.onnx.data").read_bytes()


def stored(repo: Path) -> int:
    return sum(f.stat().st_size for f in (repo / ".git" / "coral").rglob("*") if f.is_file())


def test_external_data_fine_tune(tmp_path: Path) -> None:
    repo = new_repo(tmp_path / "repo")
    attrs = (repo / ".gitattributes").read_text()
    assert "*.onnx.data filter=coral" in attrs and "*.onnx_data filter=coral" in attrs
    git(repo, "config", "coral.chunkSize", "65536")
    rng = np.random.default_rng(0)
    w = {f"layer{i}.weight": rng.standard_normal((512, 512)).astype(np.float32) for i in range(6)}  # 6 MiB
    m1, d1 = save(repo, w)
    git(repo, "add", "m.onnx", "m.onnx.data")
    git(repo, "commit", "-qm", "v1")
    p = ptr.parse(git(repo, "show", "HEAD:m.onnx.data").encode())
    assert p.format == "opaque" and p.cdc is not None and len(p.skeleton) > 20
    assert "tensor " not in git(repo, "show", "HEAD:m.onnx")  # every initializer lives in the data file
    before = stored(repo)
    w["layer3.weight"] = w["layer3.weight"] + 1e-3 * rng.standard_normal((512, 512)).astype(np.float32)
    m2, d2 = save(repo, w)
    assert m2 == m1 and d2 != d1
    git(repo, "commit", "-qam", "v2: fine-tune one layer")
    # one 1 MiB layer changed: what is new is that layer plus at most a chunk on either side
    assert stored(repo) - before <= (1 << 20) + 2 * p.cdc[2]
    for rev, want in (("HEAD~1", d1), ("HEAD", d2)):
        (repo / "m.onnx.data").unlink()
        git(repo, "checkout", "-q", rev, "--", "m.onnx.data")
        assert (repo / "m.onnx.data").read_bytes() == want
    assert (repo / "m.onnx").read_bytes() == m1
