"""Formats v2 storage: two versions of a .npy / .npz / .onnx / .gguf file, coral-git vs git-lfs.

For each scenario the same two versions are committed, one commit each, into three repositories:
git-lfs, coral-git with the format readers of this checkout, and coral-git with every file read
as opaque bytes (``--opaque-from DIR``: a checkout without these readers, e.g. the main branch).
Printed: bytes stored (``du`` of ``.git/lfs`` or ``.git/coral``) after both commits, the ratio to
git-lfs, and what the second commit added as a fraction of the file ("v2 new").

Scenarios (float32 sources built with numpy, seeds fixed):
  npy          one 4M-element F32 array, v2 = fine-tune nudge (w += 1e-3·N·|w|)
  npz          8 arrays (8.4M F32), v2 = nudge on the 4 "proj" arrays
  npz-deflate  same, written by np.savez_compressed
  onnx         same arrays as initializers of an ONNX graph (onnx package), v2 = nudge
  gguf-f16     same arrays as F16 tensors in a GGUF (gguf package), v2 = nudge
  gguf-q8/q4   same, quantized Q8_0 / Q4_0 with gguf's quantizer; v2 = nudge, then requantize
  gguf-meta    Q8_0 model, v2 = only general.name edited (longer): shifts every tensor offset

``--cdc MB`` instead prints how much of v2 fixed 1 MiB cuts and FastCDC cuts re-store after a 1-byte
insertion at offset 100 of an MB-MiB file and after the GGUF metadata edit read as opaque bytes.
``--codecs`` instead prints the delta codecs (sub+zigzag, XOR, and both with the bytes grouped by
position in the ggml block) on Q8_0/Q4_0/Q5_0/Q4_1 tensors requantized after the nudge.

Run: ``PYTHONPATH=$PWD python benchmarks/bench_formats.py [--opaque-from /work/main] [--codecs]``.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

SCENARIOS = ("npy", "npz", "npz-deflate", "onnx", "gguf-f16", "gguf-q8", "gguf-q4", "gguf-meta")


def state(seed: int = 0, width: int = 1024, layers: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in range(layers):
        out[f"blk.{i}.attn_proj.weight"] = (rng.standard_normal((width, width)) * 0.02).astype(np.float32)
        out[f"blk.{i}.ffn_proj.weight"] = (rng.standard_normal((width * 3 // 2, width)) * 0.02).astype(np.float32)
        out[f"blk.{i}.norm.weight"] = np.ones(width, np.float32)
        out[f"blk.{i}.embed.weight"] = (rng.standard_normal((width // 2, width)) * 0.02).astype(np.float32)
    return out


def nudge(s: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: (v + 1e-3 * rng.standard_normal(v.shape).astype(np.float32) * np.abs(v)) if "proj" in k else v
        for k, v in s.items()
    }


def npy_bytes(s: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    np.save(out, np.concatenate([s[k].reshape(-1) for k in sorted(s) if "proj" in k])[: 4 << 20])
    return out.getvalue()


def npz_bytes(s: dict[str, np.ndarray], compressed: bool = False) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, **s)
    return out.getvalue()


def onnx_bytes(s: dict[str, np.ndarray]) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(v, k) for k, v in s.items()]
    nodes = [helper.make_node("Identity", [k], [f"o{i}"]) for i, k in enumerate(s)]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    outs = [helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, None) for i in range(len(s))]
    return helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits)).SerializeToString()


def gguf_bytes(s: dict[str, np.ndarray], qtype: str | None, name: str = "bench") -> bytes:
    import gguf
    from gguf.quants import quantize

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_name(name)
        w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(2000)])
        for k, v in s.items():
            if qtype is None or v.ndim == 1:
                w.add_tensor(k, v.astype(np.float16) if qtype is None else v)
            else:
                q = gguf.GGMLQuantizationType[qtype]
                w.add_tensor(k, quantize(v, q), raw_dtype=q)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return path.read_bytes()


def versions(name: str) -> tuple[str, bytes, bytes]:
    s1 = state()
    s2 = nudge(s1)
    makers: dict[str, tuple[str, Callable[[dict[str, np.ndarray]], bytes]]] = {
        "npy": ("m.npy", npy_bytes),
        "npz": ("m.npz", npz_bytes),
        "npz-deflate": ("m.npz", lambda s: npz_bytes(s, True)),
        "onnx": ("m.onnx", onnx_bytes),
        "gguf-f16": ("m.gguf", lambda s: gguf_bytes(s, None)),
        "gguf-q8": ("m.gguf", lambda s: gguf_bytes(s, "Q8_0")),
        "gguf-q4": ("m.gguf", lambda s: gguf_bytes(s, "Q4_0")),
    }
    if name == "gguf-meta":
        return "m.gguf", gguf_bytes(s1, "Q8_0"), gguf_bytes(s1, "Q8_0", name="bench model, renamed after a metadata edit")
    fname, make = makers[name]
    return fname, make(s1), make(s2)


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def measure(setup: str, fname: str, v1: bytes, v2: bytes, root: Path, pythonpath: str) -> tuple[int, int]:
    """Bytes stored after both commits, and what the second commit added."""
    repo = root / setup
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": pythonpath, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@x",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@x"}  # fmt: skip
    run(["git", "init", "-q"], repo, env)
    if setup == "lfs":
        run(["git", "lfs", "install", "--local"], repo, env)
        run(["git", "lfs", "track", f"*{Path(fname).suffix}"], repo, env)
    else:
        run(["git", "coral", "init"], repo, env)
        attrs = repo / ".gitattributes"
        if f"*{Path(fname).suffix}" not in attrs.read_text():  # an old checkout: track the suffix by hand
            attrs.write_text(attrs.read_text() + f"*{Path(fname).suffix} filter=coral diff=coral merge=coral -text\n")
    run(["git", "add", ".gitattributes"], repo, env)
    sizes = []
    for i, data in enumerate((v1, v2)):
        (repo / fname).write_bytes(data)
        run(["git", "add", fname], repo, env)
        run(["git", "commit", "-qm", f"v{i + 1}"], repo, env)
        sizes.append(du(repo / ".git" / ("lfs" if setup == "lfs" else "coral")))
    return sizes[1], sizes[1] - sizes[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--opaque-from", help="a coral-git checkout without the v2 readers (files stored opaque)")
    ap.add_argument("--only", help="comma list of scenarios")
    ap.add_argument("--codecs", action="store_true", help="only the delta-codec table for requantized GGUF tensors")
    ap.add_argument("--cdc", type=int, metavar="MB", help="only the FastCDC vs fixed-cut table on an MB-MiB file")
    args = ap.parse_args()
    if args.codecs:
        codec_table()
        return
    if args.cdc:
        cdc_table(args.cdc)
        return
    here = str(Path(__file__).resolve().parents[1])
    names = args.only.split(",") if args.only else SCENARIOS
    print(f"{'scenario':<12} {'file MB':>8} {'git-lfs MB':>10} {'coral MB':>9} {'x lfs':>6} {'v2 new':>7}", end="")
    print(f" {'opaque MB':>10} {'x lfs':>6} {'v2 new':>7}" if args.opaque_from else "")
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for name in names:
            fname, v1, v2 = versions(name)
            lfs, _ = measure("lfs", fname, v1, v2, root, here)
            cor, cor2 = measure("coral", fname, v1, v2, root, here)
            line = f"{name:<12} {len(v1) / 1e6:8.1f} {lfs / 1e6:10.1f} {cor / 1e6:9.2f} {cor / lfs:6.3f} {cor2 / len(v2):7.1%}"
            if args.opaque_from:
                opq, opq2 = measure("opaque", fname, v1, v2, root, args.opaque_from)
                line += f" {opq / 1e6:10.2f} {opq / lfs:6.3f} {opq2 / len(v2):7.1%}"
            print(line, flush=True)



def codec_table() -> None:
    """Delta codecs on requantized-after-fine-tune GGUF tensors: bytes stored for v2 given v1."""
    from coral_git.store.codecs import codec

    keyframe, sub, xor = codec(1), codec(2), codec(3)
    zstd = keyframe.zstd
    s1, s2 = state(), nudge(state())
    print(f"\n{'type':<6} {'raw MB':>7} {'keyframe':>9} {'sub-zz':>8} {'xor':>8} {'xor/blk':>8} {'sub/blk':>8}  (MB, proj tensors)")
    import gguf
    from gguf.quants import quantize

    for qname in ("Q8_0", "Q4_0", "Q5_0", "Q4_1"):
        q = gguf.GGMLQuantizationType[qname]
        blk = gguf.GGML_QUANT_SIZES[q][1]
        tot = np.zeros(6)
        for k in s1:
            if "proj" not in k:
                continue
            a = quantize(s1[k], q).reshape(-1).view(np.uint8)
            b = quantize(s2[k], q).reshape(-1).view(np.uint8)
            d_xor = (a ^ b).reshape(-1, blk).T.copy().reshape(-1)  # block-transposed: byte j of every block together
            d_sub = (b.astype(np.int16) - a).astype(np.int8).view(np.uint8)
            d_sub = ((d_sub.view(np.int8) << 1) ^ (d_sub.view(np.int8) >> 7)).view(np.uint8).reshape(-1, blk).T.copy().reshape(-1)
            tot += [b.size, len(keyframe.encode(b, 1)), len(sub.encode(b, 1, a)), len(xor.encode(b, 1, a)),
                    len(bytes(zstd.encode(d_xor))), len(bytes(zstd.encode(d_sub)))]  # fmt: skip
        print(f"{qname:<6} " + " ".join(f"{x / 1e6:8.2f}" for x in tot))


def cdc_table(mb: int) -> None:
    """Fraction of v2 re-stored (chunks whose bytes v1 lacks): fixed 1 MiB cuts vs FastCDC."""
    from coral_git.core.cdc import cdc_params, cdc_ranges
    from coral_git.core.chunking import byte_chunks

    rng = np.random.default_rng(0)
    blob = rng.integers(0, 256, mb << 20, dtype=np.uint8).tobytes()
    g1, g2 = versions("gguf-meta")[1:]
    cases = {
        f"insert 1 byte at 100 of {mb} MiB": (blob, blob[:100] + b"!" + blob[100:]),
        "GGUF metadata edit, read opaque": (g1, g2),
    }
    print(f"\n{'case':<36} {'cuts':<26} {'chunks':>7} {'mean KiB':>9} {'re-stored':>10}")
    for label, (v1, v2) in cases.items():
        for cuts, cb in (("fixed 1 MiB", 0), ("fastcdc target 256 KiB", 256 << 10),
                         ("fastcdc target 1 MiB", 1 << 20), ("fastcdc target 4 MiB", 4 << 20)):  # fmt: skip
            cut = (lambda b: byte_chunks(len(b), 1 << 20)) if not cb else (lambda b, cb=cb: cdc_ranges(b, cb))
            old = {v1[a:b] for a, b in cut(v1)}
            r2 = cut(v2)
            new = sum(b - a for a, b in r2 if v2[a:b] not in old)
            name = cuts + (f" {tuple(x >> 10 for x in cdc_params(cb))}" if cb else "")
            print(f"{label:<36} {name:<26} {len(r2):7d} {len(v2) / len(r2) / 1024:9.0f} {new / len(v2):10.2%}")


if __name__ == "__main__":
    main()
