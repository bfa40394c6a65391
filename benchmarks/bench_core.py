#!/usr/bin/env python3
"""Core benchmark for coral-git against plain git and git-lfs.

Two workloads are committed version by version at a fixed path in three kinds of
repository (plain git, git-lfs, coral-git), and the same figures are measured for each:

* training run: a small torch MLP trained on scikit-learn's bundled ``load_digits``;
  each epoch saves ``model.safetensors`` (state_dict) and ``ckpt.pt`` (model + Adam state
  + epoch) at the same paths, and every epoch is one commit;
* large model: a synthetic safetensors file of >= 1 GiB of float32 tensors shaped like a
  small transformer, written in a streaming way, followed by fine-tuning-like versions
  (``w += 1e-3 * N(0,1) * |w|`` on most tensors, embeddings and norms left unchanged).

For coral-git it also times the single-file filter commands (``git coral clean`` /
``git coral smudge``) on the large file and records their peak RSS.

Everything runs in a temporary directory (under /tmp by default), which is removed at the
end unless ``--keep`` is given. Units: MB = 10^6 bytes, GB = 10^9 bytes.

Run ``python benchmarks/bench_core.py --quick`` for a smoke run, without flags for the full
run; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
MB = 1e6
GB = 1e9
SETUPS = ("git", "lfs", "coral")
SETUP_LABEL = {"git": "plain git", "lfs": "git-lfs", "coral": "coral-git"}
LARGE_NAME = "model.safetensors"
TRAIN_FILES = ("model.safetensors", "ckpt.pt")

# Targets (printed beside the figures as PASS/MISS).
TARGET_TRAIN_SIZE_VS_LFS = 0.5  # coral stored size <= 0.5x git-lfs on the training run
TARGET_CLEAN_MBPS = 250.0
TARGET_SMUDGE_MBPS = 500.0
TARGET_STATUS_GBPS = 1.0
TARGET_RSS_MB = 400.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes


class CommandError(RuntimeError):
    def __init__(self, cmd: list[str], rc: int, stderr: str, cwd: Path | None) -> None:
        self.cmd, self.rc, self.stderr, self.cwd = cmd, rc, stderr, cwd
        tail = "\n".join(stderr.strip().splitlines()[-25:])
        super().__init__(f"command failed (exit {rc}) in {cwd}: {' '.join(cmd)}\n{tail}")


@dataclass
class Ran:
    seconds: float
    stdout: bytes
    stderr: str
    rss_kb: int | None = None


GIT_ENV: dict[str, str] = {}


def run(
    cmd: list[str],
    cwd: Path | None = None,
    stdin: Path | None = None,
    stdout: Path | None = None,
    rss: bool = False,
    check: bool = True,
) -> Ran:
    """Run cmd, timing its wall clock; stdin/stdout may be files; rss=True records peak RSS (KiB)."""
    env = GIT_ENV or None
    rss_file = None
    full = list(cmd)
    if rss and TIME_BIN:
        fd, rss_name = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        rss_file = Path(rss_name)
        full = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *cmd]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with ExitStack() as stack:
        fin: Any = stack.enter_context(open(stdin, "rb")) if stdin else subprocess.DEVNULL
        fout: Any = stack.enter_context(open(stdout, "wb")) if stdout else subprocess.PIPE
        t0 = time.perf_counter()
        proc = subprocess.run(
            full,
            check=False,
            cwd=cwd,
            stdin=fin,
            stdout=fout,
            stderr=subprocess.PIPE,
            env=env,
        )
        seconds = time.perf_counter() - t0
    err = proc.stderr.decode("utf-8", "replace")
    rss_kb = None
    if rss_file is not None:
        lines = [ln for ln in rss_file.read_text().splitlines() if ln.strip()]
        rss_file.unlink()
        if lines and lines[-1].strip().isdigit():
            rss_kb = int(lines[-1].strip())
    elif rss:
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        # RUSAGE_CHILDREN is a high-water mark over all children: only a rise is attributable.
        rss_kb = after if after > before else None
    if check and proc.returncode != 0:
        raise CommandError(cmd, proc.returncode, err, cwd)
    return Ran(seconds, proc.stdout if not stdout else b"", err, rss_kb)


def git(repo: Path, *args: str, **kw: Any) -> Ran:
    return run(["git", *args], cwd=repo, **kw)


def git_out(repo: Path, *args: str) -> str:
    return git(repo, *args).stdout.decode().strip()


def setup_git_env(workdir: Path) -> None:
    """Isolate from the user's/system git config, so every setup starts from the same state."""
    cfg = workdir / "gitconfig"
    cfg.write_text(
        "[user]\n\tname = bench\n\temail = bench@example.com\n"
        "[init]\n\tdefaultBranch = main\n"
        "[advice]\n\tdetachedHead = false\n"
    )
    GIT_ENV.clear()
    GIT_ENV.update(os.environ)
    GIT_ENV.update(
        {
            "GIT_CONFIG_GLOBAL": str(cfg),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@example.com",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@example.com",
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
        }
    )


def tool_version(cmd: list[str]) -> str | None:
    try:
        p = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=GIT_ENV or None,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    return (p.stdout.strip() or p.stderr.strip()).splitlines()[0] if (p.stdout or p.stderr) else "?"


def coral_available() -> bool:
    try:
        p = subprocess.run(
            ["git", "coral", "-h"],
            check=False,
            capture_output=True,
            timeout=60,
            env=GIT_ENV or None,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0


# --------------------------------------------------------------------------- helpers


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def du_bytes(path: Path) -> tuple[int, int]:
    """(disk usage in bytes as `du -s -B1` counts it, apparent size in bytes) of a tree."""
    disk = apparent = 0
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            p = os.path.join(root, name)
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            disk += st.st_blocks * 512
            if not os.path.isdir(p):
                apparent += st.st_size
    return disk, apparent


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def bump_mtime(path: Path) -> None:
    """`touch` that is guaranteed to change the mtime's seconds, so git must re-run clean."""
    st = path.stat()
    new = max(time.time(), st.st_mtime + 1.5)
    os.utime(path, (new, new))


# --------------------------------------------------------------------------- workload 1: training


@dataclass
class Version:
    label: str
    files: dict[str, Path]  # repo path -> data file
    sha: dict[str, str]

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files.values())


@dataclass
class Dataset:
    key: str
    title: str
    versions: list[Version]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def paths(self) -> list[str]:
        return list(self.versions[0].files)

    @property
    def raw_bytes(self) -> int:
        return sum(v.nbytes for v in self.versions)


def make_training_dataset(out: Path, epochs: int, hidden: int, seed: int) -> Dataset:
    import torch
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_train = int(0.8 * len(x))
    tr, te = perm[:n_train], perm[n_train:]
    model = torch.nn.Sequential(
        torch.nn.Linear(64, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 10),
    )
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    versions: list[Version] = []
    t0 = time.perf_counter()
    acc = 0.0
    for epoch in range(1, epochs + 1):
        model.train()
        order = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(order), 64):
            idx = order[i : i + 64]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(x[te]).argmax(1) == y[te]).float().mean().item()
        d = out / f"epoch{epoch:03d}"
        d.mkdir(parents=True)
        st_path, pt_path = d / "model.safetensors", d / "ckpt.pt"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st_path))
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "epoch": epoch,
            },
            pt_path,
        )
        files = {"model.safetensors": st_path, "ckpt.pt": pt_path}
        versions.append(Version(f"epoch {epoch}", files, {k: sha256_file(p) for k, p in files.items()}))
        log(f"  epoch {epoch}/{epochs}: loss {loss.item():.4f} test acc {acc:.3f}")
    sizes = {k: p.stat().st_size for k, p in versions[0].files.items()}
    title = (
        f"Training run: MLP 64-{hidden}-{hidden}-10 ({n_params / 1e6:.2f}M params, Adam) on load_digits, "
        f"{epochs} epochs = {epochs} commits of model.safetensors ({sizes['model.safetensors'] / MB:.1f} MB) "
        f"+ ckpt.pt ({sizes['ckpt.pt'] / MB:.1f} MB)"
    )
    info = {
        "params": n_params,
        "hidden": hidden,
        "epochs": epochs,
        "final_test_accuracy": acc,
        "train_seconds": time.perf_counter() - t0,
        "file_bytes": sizes,
    }
    return Dataset("training", title, versions, info)


# --------------------------------------------------------------------------- workload 2: large model


@dataclass
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    kind: str  # "matrix" | "norm" | "embed"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def transformer_specs(target_bytes: int) -> tuple[list[TensorSpec], dict[str, int]]:
    """Tensor list of a llama-like model with enough layers for >= target_bytes of float32."""
    if target_bytes >= 512 * 2**20:
        d, ffn, vocab = 1024, 2816, 32000
    else:
        d, ffn, vocab = 256, 704, 8000
    per_layer = 4 * d * d + 3 * d * ffn + 2 * d
    fixed = vocab * d + d
    n_layers = max(1, math.ceil((target_bytes / 4 - fixed) / per_layer))
    specs = [TensorSpec("model.embed_tokens.weight", (vocab, d), "embed")]
    for i in range(n_layers):
        p = f"model.layers.{i}."
        specs += [
            TensorSpec(p + "input_layernorm.weight", (d,), "norm"),
            TensorSpec(p + "self_attn.q_proj.weight", (d, d), "matrix"),
            TensorSpec(p + "self_attn.k_proj.weight", (d, d), "matrix"),
            TensorSpec(p + "self_attn.v_proj.weight", (d, d), "matrix"),
            TensorSpec(p + "self_attn.o_proj.weight", (d, d), "matrix"),
            TensorSpec(p + "post_attention_layernorm.weight", (d,), "norm"),
            TensorSpec(p + "mlp.gate_proj.weight", (ffn, d), "matrix"),
            TensorSpec(p + "mlp.up_proj.weight", (ffn, d), "matrix"),
            TensorSpec(p + "mlp.down_proj.weight", (d, ffn), "matrix"),
        ]
    specs.append(TensorSpec("model.norm.weight", (d,), "norm"))
    return specs, {"hidden": d, "ffn": ffn, "vocab": vocab, "layers": n_layers}


CHUNK_ELEMS = 4 * 2**20  # 16 MiB of float32 per generated chunk: memory stays bounded


def write_safetensors_stream(
    path: Path,
    specs: list[TensorSpec],
    produce: Callable[[int, TensorSpec], Iterator[np.ndarray]],
) -> str:
    """Write a safetensors file tensor by tensor, chunk by chunk; return its sha256."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "generator": "coral-git bench_core"}}
    off = 0
    for s in specs:
        n = s.numel * 4
        header[s.name] = {
            "dtype": "F32",
            "shape": list(s.shape),
            "data_offsets": [off, off + n],
        }
        off += n
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for b in (struct.pack("<Q", len(hb)), hb):
            f.write(b)
            h.update(b)
        for i, s in enumerate(specs):
            written = 0
            for chunk in produce(i, s):
                assert chunk.dtype == np.float32
                b = chunk.tobytes()
                f.write(b)
                h.update(b)
                written += chunk.size
            assert written == s.numel, (s.name, written, s.numel)
    return h.hexdigest()


def data_start(path: Path) -> int:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


def make_large_versions(
    out: Path, target_bytes: int, n_versions: int, n_probes: int, seed: int
) -> tuple[Dataset, list[Version]]:
    specs, cfg = transformer_specs(target_bytes)
    out.mkdir(parents=True, exist_ok=True)

    def produce_initial(i: int, s: TensorSpec) -> Iterator[np.ndarray]:
        rng = np.random.default_rng([seed, 0, i])
        if s.kind == "norm":
            yield np.ones(s.numel, dtype=np.float32)
            return
        std = 0.02 if s.kind == "embed" else 1.0 / math.sqrt(s.shape[-1])
        for start in range(0, s.numel, CHUNK_ELEMS):
            c = rng.standard_normal(min(CHUNK_ELEMS, s.numel - start), dtype=np.float32)
            c *= np.float32(std)
            yield c

    def producer_update(prev: Path, version: int, probe: int) -> Callable[[int, TensorSpec], Iterator[np.ndarray]]:
        base = np.memmap(prev, dtype=np.float32, mode="r", offset=data_start(prev))
        offsets = np.cumsum([0] + [s.numel for s in specs])

        def produce(i: int, s: TensorSpec) -> Iterator[np.ndarray]:
            rng = np.random.default_rng([seed, version, i, probe])
            frozen = s.kind in (
                "embed",
                "norm",
            )  # "fine-tuning": embeddings and norms unchanged
            o = int(offsets[i])
            for start in range(0, s.numel, CHUNK_ELEMS):
                w = np.array(base[o + start : o + min(s.numel, start + CHUNK_ELEMS)])
                if not frozen:
                    noise = rng.standard_normal(w.size, dtype=np.float32)
                    noise *= np.abs(w)
                    noise *= np.float32(1e-3)
                    w += noise
                yield w

        return produce

    versions: list[Version] = []
    prev: Path | None = None
    for v in range(n_versions):
        p = out / f"v{v:02d}.safetensors"
        t0 = time.perf_counter()
        sha = write_safetensors_stream(p, specs, produce_initial if prev is None else producer_update(prev, v, 0))
        versions.append(Version(f"v{v}", {LARGE_NAME: p}, {LARGE_NAME: sha}))
        log(f"  wrote {p.name}: {p.stat().st_size / MB:.1f} MB in {time.perf_counter() - t0:.1f}s")
        prev = p
    probes: list[Version] = []
    assert prev is not None
    for k in range(n_probes):  # uncommitted "next versions" used to time coral's clean of new data
        p = out / f"probe{k}.safetensors"
        sha = write_safetensors_stream(p, specs, producer_update(prev, n_versions, k + 1))
        probes.append(Version(f"probe{k}", {LARGE_NAME: p}, {LARGE_NAME: sha}))
    _check_safetensors(versions[0].files[LARGE_NAME], specs)
    size = versions[0].nbytes
    changed = sum(s.numel * 4 for s in specs if s.kind == "matrix")
    title = (
        f"Large model: synthetic safetensors, {len(specs)} float32 tensors "
        f"(d={cfg['hidden']}, ffn={cfg['ffn']}, vocab={cfg['vocab']}, {cfg['layers']} layers), "
        f"{size / MB:.1f} MB ({size / 2**30:.2f} GiB) x {n_versions} versions; "
        f"{changed / size:.0%} of bytes updated per version"
    )
    info = {
        "tensors": len(specs),
        **cfg,
        "file_bytes": size,
        "versions": n_versions,
        "updated_fraction": changed / size,
    }
    return Dataset("large", title, versions, info), probes


def _check_safetensors(path: Path, specs: list[TensorSpec]) -> None:
    """Sanity check of the hand-written file with the reference reader."""
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f:
        keys = set(f.keys())
        assert keys == {s.name for s in specs}, "safetensors key mismatch"
        t = f.get_tensor("model.norm.weight")
        assert t.dtype == np.float32 and bool(np.all(t == 1.0))


# --------------------------------------------------------------------------- repository setups


def init_repo(repo: Path, setup: str, patterns: list[str]) -> None:
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    if setup == "lfs":
        git(repo, "lfs", "install", "--local")
        git(repo, "lfs", "track", *patterns)
    elif setup == "coral":
        git(repo, "coral", "init")
    if (repo / ".gitattributes").exists():
        git(repo, "add", ".gitattributes")
    git(repo, "commit", "-q", "--allow-empty", "-m", f"init {setup}")


def measure_setup(ds: Dataset, setup: str, root: Path, runs: int, keep: bool) -> dict[str, Any]:
    """Commit every version of ds into a fresh repo of the given kind and measure it."""
    repo = root / f"{ds.key}-{setup}"
    res: dict[str, Any] = {"setup": setup, "repo": str(repo)}
    patterns = ["*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt"]
    init_repo(repo, setup, patterns)
    base_du = du_bytes(repo / ".git")[0]

    add_s: list[float] = []
    commit_s: list[float] = []
    add_rss: list[int] = []
    commits: list[str] = []
    for i, v in enumerate(ds.versions):
        for rel, src in v.files.items():
            shutil.copyfile(src, repo / rel)
        a = git(repo, "add", *v.files, rss=True)
        c = git(repo, "commit", "-q", "-m", f"{ds.key} {v.label}")
        add_s.append(a.seconds)
        commit_s.append(c.seconds)
        if a.rss_kb:
            add_rss.append(a.rss_kb)
        commits.append(git_out(repo, "rev-parse", "HEAD"))
        log(
            f"  [{setup}] committed {v.label} ({i + 1}/{len(ds.versions)}): add {a.seconds:.2f}s commit {c.seconds:.2f}s"
        )
    per_version = [a + c for a, c in zip(add_s, commit_s, strict=True)]
    res.update(
        add_seconds=add_s,
        commit_seconds=commit_s,
        add_commit_median_s=median(per_version),
        add_commit_median_excl_first_s=median(per_version[1:]) if len(per_version) > 1 else None,
        add_commit_total_s=sum(per_version),
        add_peak_rss_mb=(max(add_rss) * 1024 / MB) if add_rss else None,
    )

    disk, apparent = du_bytes(repo / ".git")
    res.update(
        git_dir_bytes=disk,
        git_dir_apparent_bytes=apparent,
        git_dir_empty_repo_bytes=base_du,
        raw_bytes=ds.raw_bytes,
        ratio_to_raw=disk / ds.raw_bytes,
        subdirs={
            d: du_bytes(repo / ".git" / d)[0] for d in ("objects", "lfs", "coral") if (repo / ".git" / d).exists()
        },
    )
    if setup in ("lfs", "coral"):
        blob = git(repo, "cat-file", "blob", f"HEAD:{ds.paths[0]}").stdout
        res["pointer_bytes"] = len(blob)

    # git status on an unchanged tree, after `touch` of the model files (forces a re-clean).
    status_s: list[float] = []
    touched = sum((repo / p).stat().st_size for p in ds.paths)
    for _ in range(runs):
        for p in ds.paths:
            bump_mtime(repo / p)
        r = git(repo, "status", "--porcelain")
        status_s.append(r.seconds)
        if r.stdout.strip():
            res["status_dirty_output"] = r.stdout.decode(errors="replace")[:500]
    res.update(
        status_seconds=status_s,
        status_median_s=median(status_s),
        status_touched_bytes=touched,
    )
    res["status_gbps"] = touched / GB / res["status_median_s"] if res["status_median_s"] else None

    # checkout of the oldest and of the latest version, file deleted first so it is really written.
    verified = True
    for which, idx in (("oldest", 0), ("latest", len(ds.versions) - 1)):
        secs: list[float] = []
        for r_i in range(runs):
            for p in ds.paths:
                (repo / p).unlink(missing_ok=True)
            r = git(repo, "checkout", commits[idx], "--", *ds.paths)
            secs.append(r.seconds)
            if r_i == 0:
                for p in ds.paths:
                    if sha256_file(repo / p) != ds.versions[idx].sha[p]:
                        verified = False
                        log(
                            f"  [{setup}] MISMATCH: {p} checked out at {ds.versions[idx].label} differs from the original"
                        )
        res[f"checkout_{which}_seconds"] = secs
        res[f"checkout_{which}_median_s"] = median(secs)
        res[f"checkout_{which}_bytes"] = ds.versions[idx].nbytes
    git(repo, "checkout", "HEAD", "--", *ds.paths)
    res["roundtrip_verified"] = verified
    res["commits"] = commits
    if not keep and not (setup == "coral" and ds.key == "large"):
        shutil.rmtree(repo)
    return res


def measure_coral_filter(
    ds: Dataset,
    probes: list[Version],
    root: Path,
    commits: list[str],
    runs: int,
    keep: bool,
) -> dict[str, Any]:
    """Single-file `git coral clean` / `git coral smudge` on the large file: MB/s and peak RSS."""
    repo = root / f"{ds.key}-coral"
    rel = LARGE_NAME
    out = root / "coral-filter-out"
    out.mkdir(exist_ok=True)
    res: dict[str, Any] = {}
    ops: dict[str, dict[str, Any]] = {}

    def record(name: str, nbytes: int, rans: list[Ran], note: str) -> None:
        secs = [r.seconds for r in rans]
        rss = [r.rss_kb for r in rans if r.rss_kb]
        m = median(secs)
        ops[name] = {
            "note": note,
            "bytes": nbytes,
            "seconds": secs,
            "median_s": m,
            "mbps": nbytes / MB / m if m else None,
            "peak_rss_mb": max(rss) * 1024 / MB if rss else None,
        }
        log(f"  [coral filter] {name}: {ops[name]['mbps'] or 0:.1f} MB/s, peak RSS {ops[name]['peak_rss_mb']} MB")

    # 0. process start-up cost, which the small-file figures include.
    rans = [git(repo, "coral", "version", rss=True) for _ in range(runs)]
    record("start-up (git coral version)", 0, rans, "fixed cost per command, included in every row")

    # 1. clean into an empty store (fresh repo each run).
    v0 = ds.versions[0]
    rans = []
    for r_i in range(runs):
        fresh = root / f"coral-cold-{r_i}"
        init_repo(fresh, "coral", [])
        rans.append(
            git(
                fresh,
                "coral",
                "clean",
                rel,
                stdin=v0.files[rel],
                stdout=out / "cold.ptr",
                rss=True,
            )
        )
        shutil.rmtree(fresh)
    record(
        "clean, empty store (v0)",
        v0.nbytes,
        rans,
        "first version into a fresh repo's empty store",
    )

    # 2. clean of a new version on top of the committed history (each probe is distinct new data).
    rans = []
    for k, pv in enumerate(probes[:runs]):
        rans.append(
            git(
                repo,
                "coral",
                "clean",
                rel,
                stdin=pv.files[rel],
                stdout=out / f"probe{k}.ptr",
                rss=True,
            )
        )
    if rans:
        record(
            "clean, new version",
            probes[0].nbytes,
            rans,
            "unseen next version, previous versions committed",
        )

    # 3. clean of the already-stored HEAD version (what `git status` after touch costs).
    head = ds.versions[-1]
    rans = [
        git(
            repo,
            "coral",
            "clean",
            rel,
            stdin=head.files[rel],
            stdout=out / "head.ptr",
            rss=True,
        )
        for _ in range(runs)
    ]
    record(
        "clean, already stored (HEAD)",
        head.nbytes,
        rans,
        "re-clean of the committed latest version",
    )

    # 4. smudge of the oldest and of the latest committed version from their pointers.
    verified = True
    for name, idx in (
        ("smudge, oldest version", 0),
        ("smudge, latest version", len(ds.versions) - 1),
    ):
        ptr = out / f"v{idx}.ptr"
        ptr.write_bytes(git(repo, "cat-file", "blob", f"{commits[idx]}:{rel}").stdout)
        target = out / "smudged.bin"
        rans = []
        for r_i in range(runs):
            target.unlink(missing_ok=True)
            rans.append(git(repo, "coral", "smudge", rel, stdin=ptr, stdout=target, rss=True))
            if r_i == 0 and sha256_file(target) != ds.versions[idx].sha[rel]:
                verified = False
                log(f"  [coral filter] MISMATCH: smudge of {ds.versions[idx].label} differs from the original")
        target.unlink(missing_ok=True)
        record(name, ds.versions[idx].nbytes, rans, f"pointer of {ds.versions[idx].label}")

    res["ops"] = ops
    res["smudge_verified"] = verified
    rss_all = [o["peak_rss_mb"] for o in ops.values() if o["peak_rss_mb"] is not None]
    res["peak_rss_mb"] = max(rss_all) if rss_all else None
    res["rss_method"] = "/usr/bin/time -f %M" if TIME_BIN else "getrusage(RUSAGE_CHILDREN) high-water mark"
    shutil.rmtree(out, ignore_errors=True)
    if not keep:
        shutil.rmtree(repo, ignore_errors=True)
    return res


def describe(exc: BaseException) -> str:
    if isinstance(exc, CommandError):
        return str(exc)
    import traceback

    tb = "".join(traceback.format_exception(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {exc}\n" + "\n".join(tb[-12:])


def git_add_row(res: dict[str, Any], ds: Dataset) -> dict[str, dict[str, Any]]:
    """The `git add` of each version through filter.coral.process, as a filter-table row."""
    secs = res.get("add_seconds") or []
    if not secs:
        return {}
    m = median(secs)
    nbytes = ds.versions[0].nbytes
    return {
        "git add (filter.coral.process)": {
            "note": "per version; RSS = max(git, which reads the whole file, and filter)",
            "bytes": nbytes,
            "seconds": secs,
            "median_s": m,
            "mbps": nbytes / MB / m if m else None,
            "peak_rss_mb": res.get("add_peak_rss_mb"),
        }
    }


# --------------------------------------------------------------------------- report


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= GB:
        return f"{n / GB:.2f} GB"
    return f"{n / MB:.1f} MB"


def fmt_s(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3f}s" if x < 10 else f"{x:.1f}s")


def with_ratio(text: str, val: float | None, ref: float | None, setup: str) -> str:
    if setup == "lfs" or val is None or not ref:
        return text
    return f"{text} ({val / ref:.2f}x)"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(x.rstrip() for x in out)


def report_dataset(ds_res: dict[str, Any]) -> str:
    lines = [
        f"== {ds_res['title']}",
        f"   raw bytes committed: {fmt_bytes(ds_res['raw_bytes'])}",
    ]
    setups = ds_res["setups"]
    lfs = setups.get("lfs", {})

    def ref(key: str) -> float | None:
        return lfs.get(key) if isinstance(lfs, dict) else None

    rows = []
    for setup in SETUPS:
        r = setups.get(setup)
        if r is None:
            continue
        if "error" in r:
            rows.append([SETUP_LABEL[setup], "ERROR: " + r["error"].splitlines()[0][:100]] + [""] * 6)
            continue
        if "skipped" in r:
            rows.append([SETUP_LABEL[setup], "skipped: " + r["skipped"]] + [""] * 6)
            continue
        rows.append(
            [
                SETUP_LABEL[setup],
                with_ratio(
                    fmt_bytes(r["git_dir_bytes"]),
                    r["git_dir_bytes"],
                    ref("git_dir_bytes"),
                    setup,
                ),
                f"{r['ratio_to_raw']:.3f}",
                with_ratio(
                    fmt_s(r["add_commit_median_s"]),
                    r["add_commit_median_s"],
                    ref("add_commit_median_s"),
                    setup,
                ),
                with_ratio(
                    fmt_s(r["checkout_oldest_median_s"]),
                    r["checkout_oldest_median_s"],
                    ref("checkout_oldest_median_s"),
                    setup,
                ),
                with_ratio(
                    fmt_s(r["checkout_latest_median_s"]),
                    r["checkout_latest_median_s"],
                    ref("checkout_latest_median_s"),
                    setup,
                ),
                with_ratio(
                    fmt_s(r["status_median_s"]),
                    r["status_median_s"],
                    ref("status_median_s"),
                    setup,
                )
                + f" = {r['status_gbps']:.2f} GB/s",
                "yes" if r["roundtrip_verified"] and "status_dirty_output" not in r else "NO",
            ]
        )
    headers = [
        "setup",
        ".git size (x lfs)",
        "/raw",
        "add+commit/ver med",
        "checkout oldest med",
        "checkout latest med",
        "status after touch med",
        "ok",
    ]
    lines.append(table(headers, rows))
    return "\n".join(lines)


def report_filter(fr: dict[str, Any]) -> str:
    if "error" in fr:
        return "== coral-git single-file filter on the large file\n   ERROR: " + fr["error"]
    rows = [
        [
            name,
            f"{o['mbps']:.1f}" if o["mbps"] else "-",
            fmt_s(o["median_s"]),
            f"{o['peak_rss_mb']:.0f}" if o["peak_rss_mb"] else "-",
            o["note"],
        ]
        for name, o in fr["ops"].items()
    ]
    head = f"== coral-git single-file filter on the large file (peak RSS by {fr['rss_method']})"
    if not fr.get("smudge_verified", True):
        head += "\n   !! smudge output differs from the original file"
    return head + "\n" + table(["operation", "MB/s med", "seconds med", "peak RSS MB", "what"], rows)


def evaluate_targets(results: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []

    def add(
        name: str,
        value: float | None,
        fmt: str,
        ok: Callable[[float], bool],
        why: str = "",
    ) -> None:
        if value is None:
            rows.append([name, "n/a", "N/A", why])
        else:
            rows.append([name, fmt.format(value), "PASS" if ok(value) else "MISS", why])

    tr = results["datasets"].get("training", {}).get("setups", {})
    c, lf = tr.get("coral", {}), tr.get("lfs", {})
    ratio = None
    if "git_dir_bytes" in c and "git_dir_bytes" in lf:
        ratio = c["git_dir_bytes"] / lf["git_dir_bytes"]
    add(
        f"training-run stored size <= {TARGET_TRAIN_SIZE_VS_LFS}x git-lfs",
        ratio,
        "{:.3f}x",
        lambda v: v <= TARGET_TRAIN_SIZE_VS_LFS,
        "" if ratio is not None else "needs coral + lfs training runs",
    )
    ops = results.get("coral_filter", {}).get("ops", {})
    for name in ("clean, empty store (v0)", "clean, new version"):
        add(
            f"{name} >= {TARGET_CLEAN_MBPS:.0f} MB/s",
            ops.get(name, {}).get("mbps"),
            "{:.1f} MB/s",
            lambda v: v >= TARGET_CLEAN_MBPS,
            "" if name in ops else "coral filter not measured",
        )
    for name in ("smudge, oldest version", "smudge, latest version"):
        add(
            f"{name} >= {TARGET_SMUDGE_MBPS:.0f} MB/s",
            ops.get(name, {}).get("mbps"),
            "{:.1f} MB/s",
            lambda v: v >= TARGET_SMUDGE_MBPS,
            "" if name in ops else "coral filter not measured",
        )
    lg = results["datasets"].get("large", {}).get("setups", {}).get("coral", {})
    add(
        f"status on unchanged (touched) large file >= {TARGET_STATUS_GBPS:.0f} GB/s",
        lg.get("status_gbps"),
        "{:.2f} GB/s",
        lambda v: v >= TARGET_STATUS_GBPS,
        "" if "status_gbps" in lg else "coral large run missing",
    )
    add(
        f"filter peak RSS < {TARGET_RSS_MB:.0f} MB (large file)",
        results.get("coral_filter", {}).get("peak_rss_mb"),
        "{:.0f} MB",
        lambda v: v < TARGET_RSS_MB,
        "",
    )
    return rows


def render(results: dict[str, Any]) -> str:
    env = results["env"]
    parts = [
        "coral-git core benchmark" + (" (--quick)" if results["config"]["quick"] else ""),
        (
            f"machine: {env['cpus']} CPUs, {env['platform']}; {env['git']}; {env['git_lfs']}; "
            f"coral: {env['coral'] or 'not available'}"
        ),
        (
            f"runs per timed figure: {results['config']['runs']} (median); MB = 1e6 B, GB = 1e9 B; "
            "'(x)' = ratio to git-lfs in this run; sizes are `du` of .git (incl. lfs/coral objects)"
        ),
        "",
    ]
    for ds in results["datasets"].values():
        parts += [report_dataset(ds), ""]
    if "coral_filter" in results:
        parts += [report_filter(results["coral_filter"]), ""]
    parts += [
        "== targets (coral-git)",
        table(["target", "measured", "result", "note"], evaluate_targets(results)),
    ]
    if results.get("notes"):
        parts += ["", "== notes"] + [f"-- {n}" for n in results["notes"]]
    if results.get("errors"):
        parts += ["", "== errors"] + [f"-- {e}" for e in results["errors"]]
    la0, la1 = env.get("loadavg_start"), env.get("loadavg_end")
    load = f" (1-min load average {la0[0]:.1f} at start, {la1[0]:.1f} at end)" if la0 and la1 else ""
    parts.append(f"\ntotal benchmark time: {results['total_seconds']:.0f}s{load}")
    return "\n".join(parts)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small smoke run (tiny MLP, 64 MiB model, 3 versions)",
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent directory for the temporary work dir (default: system temp, /tmp)",
    )
    ap.add_argument(
        "--keep",
        action="store_true",
        help="keep the work dir (data and repositories) at the end",
    )
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write all figures as JSON to this path",
    )
    ap.add_argument(
        "--setups",
        default=",".join(SETUPS),
        help="comma list of setups among git,lfs,coral (default: all; coral skipped if unavailable)",
    )
    ap.add_argument(
        "--skip-plain-git-large",
        action="store_true",
        help="do not run plain git on the large model",
    )
    ap.add_argument("--skip-training", action="store_true", help="skip the training-run workload")
    ap.add_argument("--skip-large", action="store_true", help="skip the large-model workload")
    ap.add_argument(
        "--runs",
        type=int,
        default=None,
        help="repetitions per timed figure (default 3)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs = versions (default 20, quick 4)",
    )
    ap.add_argument(
        "--hidden",
        type=int,
        default=None,
        help="MLP hidden width (default 2048, quick 512)",
    )
    ap.add_argument(
        "--large-mib",
        type=int,
        default=None,
        help="large model size in MiB (default 1024, quick 64)",
    )
    ap.add_argument(
        "--large-versions",
        type=int,
        default=None,
        help="large model versions (default 5, quick 3)",
    )
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    q = a.quick
    a.runs = a.runs or 3
    a.epochs = a.epochs or (4 if q else 20)
    a.hidden = a.hidden or (512 if q else 2048)
    a.large_mib = a.large_mib or (64 if q else 1024)
    a.large_versions = a.large_versions or (3 if q else 5)
    a.setups = [s.strip() for s in a.setups.split(",") if s.strip()]
    bad = [s for s in a.setups if s not in SETUPS]
    if bad:
        ap.error(f"unknown setup(s): {bad}")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    parent = (args.workdir or Path(tempfile.gettempdir())).resolve()
    if parent == PROJECT_ROOT or PROJECT_ROOT in parent.parents:
        sys.exit(f"refusing to run inside the project ({PROJECT_ROOT}); pick a --workdir outside it")
    parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="coral-bench-", dir=parent))
    log(f"work dir: {work}")
    setup_git_env(work)

    setups = list(args.setups)
    has_coral = coral_available()
    errors: list[str] = []
    notes: list[str] = []
    if "coral" in setups and not has_coral:
        notes.append("`git coral -h` failed: coral-git is not installed (pip install -e .); coral-git setup skipped")
        log(notes[-1])
        setups.remove("coral")
    results: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "env": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "git": tool_version(["git", "--version"]),
            "git_lfs": tool_version(["git", "lfs", "version"]),
            "coral": (tool_version(["git", "coral", "version"]) or "installed") if has_coral else None,
            "time_bin": TIME_BIN,
            "loadavg_start": os.getloadavg(),
        },
        "datasets": {},
        "errors": errors,
        "notes": notes,
    }
    try:
        data = work / "data"
        plan: list[tuple[Dataset, list[Version]]] = []
        if not args.skip_training:
            log(f"training MLP 64-{args.hidden}-{args.hidden}-10 for {args.epochs} epochs")
            plan.append(
                (
                    make_training_dataset(data / "training", args.epochs, args.hidden, args.seed),
                    [],
                )
            )
        if not args.skip_large:
            log(f"generating a {args.large_mib} MiB safetensors model x {args.large_versions} versions")
            n_probes = args.runs if "coral" in setups else 0
            plan.append(
                make_large_versions(
                    data / "large",
                    args.large_mib * 2**20,
                    args.large_versions,
                    n_probes,
                    args.seed,
                )
            )
        for ds, probes in plan:
            ds_res: dict[str, Any] = {
                "title": ds.title,
                "raw_bytes": ds.raw_bytes,
                "info": ds.info,
                "setups": {},
            }
            results["datasets"][ds.key] = ds_res
            for setup in setups:
                if setup == "git" and ds.key == "large" and args.skip_plain_git_large:
                    ds_res["setups"][setup] = {"skipped": "--skip-plain-git-large"}
                    continue
                log(f"{ds.key}: {SETUP_LABEL[setup]}")
                try:
                    ds_res["setups"][setup] = measure_setup(ds, setup, work, args.runs, args.keep)
                except Exception as exc:  # report it and go on with the other setups
                    ds_res["setups"][setup] = {"error": describe(exc)}
                    errors.append(f"{ds.key}/{setup}: {describe(exc)}")
                    log(errors[-1])
                    continue
                if setup == "coral" and ds.key == "large":
                    try:
                        results["coral_filter"] = measure_coral_filter(
                            ds,
                            probes,
                            work,
                            ds_res["setups"][setup]["commits"],
                            args.runs,
                            args.keep,
                        )
                    except Exception as exc:
                        results["coral_filter"] = {"error": describe(exc)}
                        errors.append(f"coral filter: {describe(exc)}")
                        log(errors[-1])
                    add_row = git_add_row(ds_res["setups"][setup], ds)
                    if add_row and "ops" in results["coral_filter"]:
                        results["coral_filter"]["ops"].update(add_row)
            if not args.keep:  # free the disk before the next workload
                for v in ds.versions + probes:
                    for p in v.files.values():
                        p.unlink(missing_ok=True)
    finally:
        if args.keep:
            log(f"kept work dir: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["total_seconds"] = time.perf_counter() - t_start
    results["env"]["loadavg_end"] = os.getloadavg()
    results["targets"] = [
        dict(zip(("target", "measured", "result", "note"), r, strict=True)) for r in evaluate_targets(results)
    ]
    text = render(results)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
        log(f"wrote {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
