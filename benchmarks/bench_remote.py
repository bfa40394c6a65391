#!/usr/bin/env python3
"""Remote benchmark: sharing a model repository through coral-git remote stores vs git-lfs.

A synthetic llama-like safetensors model (``--mib``, default 1024 MiB) gets ``--versions``
fine-tuning-like versions (bench_core's generator), committed one by one. Then, for each setup:

* ``coral-s3``: git objects to a local bare repository, chunks to ``s3://bench/<run>`` on a moto S3
  server on 127.0.0.1 (started here, in this process);
* ``coral-path``: git objects and chunks to a local bare repository (``<bare>/coral``);
* ``lfs``: git-lfs to a local bare repository (its standalone file transfer).

it measures: the time of ``git push`` of the whole history and the bytes that reached the remote
store; the time of ``git clone`` (latest version checked out) and the bytes it fetched; and the
time and bytes of checking out the oldest version in a pointers-only clone
(``CORAL_SKIP_SMUDGE=1`` / ``GIT_LFS_SKIP_SMUDGE=1`` then ``git checkout <oldest> -- model``).

``--compare-mib`` (default 128) also runs coral's push encodings (``coral.pushEncoding``) on a
smaller model: reencode (default), closure and keyframes, each pushing an old branch first and then
the whole history, and reports bytes pushed and bytes fetched for the oldest version.

Units: MB = 10^6 bytes. Progress on stderr, the report on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core as bc

MB = 1e6
NAME = bc.LARGE_NAME
COMPARE = [  # (label, coral.pushEncoding, coral.remoteMaxChain)
    ("closure", "closure", None),
    ("reencode, chain<=255", "reencode", 255),
    ("reencode, chain<=2", "reencode", 2),
    ("reencode, chain<=1", "reencode", 1),
    ("keyframes", "keyframes", None),
]
BUCKET = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[Any, str, Any]:
    import logging

    import boto3

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from helpers.s3_server import CountingMotoServer  # moto that records every request it answers

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
    port = free_port()
    server = CountingMotoServer(port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench"
    )
    client.create_bucket(Bucket=BUCKET)
    return server, endpoint, client


def bucket_bytes(client: Any, prefix: str) -> tuple[int, int]:
    n = total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/"):
        for item in page.get("Contents", []):
            n += 1
            total += item["Size"]
    return n, total


def tree_bytes(path: Path) -> int:
    return bc.du_bytes(path)[1] if path.exists() else 0


def commit_versions(repo: Path, setup: str, versions: list[bc.Version]) -> float:
    bc.init_repo(repo, "lfs" if setup == "lfs" else "coral", [NAME])
    t = 0.0
    for v in versions:
        shutil.copyfile(v.files[NAME], repo / NAME)
        t += bc.git(repo, "add", NAME).seconds
        t += bc.git(repo, "commit", "-qm", v.label).seconds
    return t


def store_dir(clone: Path, setup: str) -> Path:
    return clone / ".git" / ("lfs/objects" if setup == "lfs" else "coral/objects")


def share(setup: str, src: Path, root: Path, versions: list[bc.Version], s3: tuple[Any, str, Any] | None,
          tag: str, mode: str = "reencode", partial_first: bool = False, max_chain: int | None = None) -> dict[str, Any]:
    """Push ``src``'s history to a fresh remote, clone it, check out the oldest version lazily."""
    bare = root / f"{tag}.git"
    bc.git(root, "init", "-q", "--bare", str(bare))
    bc.git(src, "remote", "remove", "origin", check=False)
    bc.git(src, "remote", "add", "origin", str(bare))
    bc.git(src, "config", "--unset", "coral.remote.origin.url", check=False)
    clone_cfg: list[str] = []
    if setup == "coral-s3":
        assert s3 is not None
        url = f"s3://{BUCKET}/{tag}"
        bc.git(src, "coral", "remote", "set", "origin", url)
        clone_cfg = ["-c", f"coral.remote.origin.url={url}"]
    bc.git(src, "config", "coral.pushEncoding", mode)
    if max_chain is None:
        bc.git(src, "config", "--unset", "coral.remoteMaxChain", check=False)
    else:
        bc.git(src, "config", "coral.remoteMaxChain", str(max_chain))
    res: dict[str, Any] = {"setup": setup, "mode": mode, "max_chain": max_chain}

    def remote_bytes() -> int:
        if setup == "coral-s3":
            return bucket_bytes(s3[0], tag)[1]  # type: ignore[index]
        if setup == "lfs":
            return tree_bytes(bare / "lfs/objects")
        return tree_bytes(bare / "coral/objects") + tree_bytes(bare / "coral/packs")

    def requests() -> int:
        return len(s3[2].take()) if setup == "coral-s3" else 0  # type: ignore[index]

    if partial_first:
        bc.git(src, "push", "-q", "origin", f"HEAD~{len(versions) // 2}:refs/heads/old")
        res["partial_push_bytes"] = remote_bytes()
    requests()
    ran = bc.git(src, "push", "-q", "origin", "HEAD:refs/heads/main")
    res["push_requests"] = requests()
    res["push_s"] = ran.seconds
    res["push_bytes"] = remote_bytes()
    requests()
    clone = root / f"{tag}-clone"
    ran = bc.git(root, "clone", "-q", *clone_cfg, str(bare), str(clone))
    res["clone_s"] = ran.seconds
    res["clone_requests"] = requests()
    res["clone_bytes"] = tree_bytes(store_dir(clone, setup))
    res["clone_ok"] = bc.sha256_file(clone / NAME) == versions[-1].sha[NAME]
    shutil.rmtree(clone)
    lazy = root / f"{tag}-lazy"
    skip = {"CORAL_SKIP_SMUDGE": "1", "GIT_LFS_SKIP_SMUDGE": "1"}
    bc.GIT_ENV.update(skip)
    try:
        bc.git(root, "clone", "-q", *clone_cfg, str(bare), str(lazy))
    finally:
        for k in skip:
            bc.GIT_ENV.pop(k, None)
    before = tree_bytes(store_dir(lazy, setup))
    oldest = f"HEAD~{len(versions) - 1}"
    requests()
    ran = bc.git(lazy, "checkout", oldest, "--", NAME)
    res["old_requests"] = requests()
    res["old_s"] = ran.seconds
    res["old_bytes"] = tree_bytes(store_dir(lazy, setup)) - before
    res["old_ok"] = bc.sha256_file(lazy / NAME) == versions[0].sha[NAME]
    shutil.rmtree(lazy)
    return res


def run_main(args: argparse.Namespace, work: Path, s3: tuple[Any, str, Any]) -> dict[str, Any]:
    data = work / "data"
    ds, _ = bc.make_large_versions(data, int(args.mib * 2**20), args.versions, 0, args.seed)
    out: dict[str, Any] = {"title": ds.title, "file_bytes": ds.versions[0].nbytes, "setups": {}}
    sources: dict[str, Path] = {}
    for kind in ("coral", "lfs"):
        if kind == "lfs" and (args.skip_lfs or "lfs" not in args.setups.split(",")):
            continue
        src = work / f"src-{kind}"
        bc.log(f"committing {len(ds.versions)} versions into {kind}")
        out[f"commit_s_{kind}"] = commit_versions(src, kind, ds.versions)
        sources[kind] = src
    setups = [x for x in args.setups.split(",") if not (x == "lfs" and args.skip_lfs)]
    for setup in setups:
        runs = []
        for r in range(args.runs):
            bc.log(f"{setup}: push / clone / old checkout, run {r + 1}/{args.runs}")
            src = sources["lfs" if setup == "lfs" else "coral"]
            runs.append(share(setup, src, work, ds.versions, s3, f"{setup}-{r}"))
        out["setups"][setup] = runs
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    return out


def run_compare(args: argparse.Namespace, work: Path, s3: tuple[Any, str, Any]) -> dict[str, Any]:
    data = work / "cmp-data"
    ds, _ = bc.make_large_versions(data, int(args.compare_mib * 2**20), args.versions, 0, args.seed + 1)
    src = work / "cmp-src"
    bc.log(f"encodings: committing {len(ds.versions)} versions of {ds.versions[0].nbytes / MB:.0f} MB")
    commit_versions(src, "coral", ds.versions)
    res = {"file_bytes": ds.versions[0].nbytes, "versions": len(ds.versions), "full": args.compare_full, "modes": {}}
    for label, mode, chain in COMPARE:
        bc.log(f"encodings: {label}")
        res["modes"][label] = share(
            "coral-s3", src, work, ds.versions, s3, f"cmp-{mode}-{chain}", mode,
            partial_first=not args.compare_full, max_chain=chain,
        )
    shutil.rmtree(data, ignore_errors=True)
    return res


def med(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def render(res: dict[str, Any]) -> str:
    lines = []
    m = res.get("main")
    if m:
        size = m["file_bytes"]
        lines.append(f"== {m['title']}")
        lines.append(f"runs per setup: {len(next(iter(m['setups'].values())))} (medians shown)")
        lines.append(
            f"{'setup':<11} {'push s':>8} {'pushed MB':>10} {'clone s':>8} {'clone MB':>9} "
            f"{'old co s':>9} {'old MB':>8} {'ok':>4} {'S3 requests push/clone/old':>27}"
        )
        lfs = m["setups"].get("lfs")
        for setup, rows in m["setups"].items():
            ok = all(r["clone_ok"] and r["old_ok"] for r in rows)

            def cell(key: str, scale: float = 1.0, fmt: str = "{:.1f}", rows=rows, setup=setup) -> str:
                v = med(rows, key) / scale
                s = fmt.format(v)
                if lfs and setup != "lfs":
                    ref = med(lfs, key) / scale
                    s += f" ({v / ref:.2f}x)" if ref else ""
                return s

            lines.append(
                f"{setup:<11} {cell('push_s'):>8} {cell('push_bytes', MB, '{:.0f}'):>10} {cell('clone_s'):>8} "
                f"{cell('clone_bytes', MB, '{:.0f}'):>9} {cell('old_s'):>9} {cell('old_bytes', MB, '{:.0f}'):>8} "
                f"{'yes' if ok else 'NO':>4} "
                + (f"{med(rows, 'push_requests'):>11.0f}/{med(rows, 'clone_requests'):.0f}/{med(rows, 'old_requests'):.0f}"
                   if setup == "coral-s3" else "")
            )
        lines.append(f"(one version = {size / MB:.0f} MB; ratios in brackets are against git-lfs in the same run)")
    c = res.get("compare")
    if c:
        lines.append("")
        how = "whole history in one push" if c.get("full") else "the branch at the middle version pushed first, then all"
        lines.append(
            f"== push encodings (coral-s3), {c['file_bytes'] / MB:.0f} MB model x {c.get('versions', '?')} versions: {how}"
        )
        lines.append(f"{'mode':<21} {'old branch MB':>14} {'all MB':>8} {'clone MB':>9} {'oldest co MB':>13} {'ok':>4}")
        for mode, r in c["modes"].items():
            lines.append(
                f"{mode:<21} {r.get('partial_push_bytes', 0) / MB:>14.0f} {r['push_bytes'] / MB:>8.0f} "
                f"{r['clone_bytes'] / MB:>9.0f} {r['old_bytes'] / MB:>13.0f} {'yes' if r['clone_ok'] and r['old_ok'] else 'NO':>4}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=float, default=1024, help="model size in MiB (default 1024)")
    ap.add_argument("--versions", type=int, default=5)
    ap.add_argument("--runs", type=int, default=1, help="pushes/clones per setup, each to a fresh remote")
    ap.add_argument("--compare-mib", type=float, default=128, help="model size for the encodings table (0: skip)")
    ap.add_argument("--compare-full", action="store_true", help="encodings: one push of the whole history")
    ap.add_argument("--skip-main", action="store_true")
    ap.add_argument("--skip-lfs", action="store_true")
    ap.add_argument("--setups", default="coral-s3,coral-path,lfs", help="comma-separated: coral-s3,coral-path,lfs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="coral-bench-remote-", dir=args.workdir))
    bc.setup_git_env(work)
    bc.GIT_ENV.update({
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(work / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(work / "none"), "CORAL_QUIET": "1",
    })
    bc.git(work, "lfs", "install", "--skip-repo")  # lfs filters in the global config, for clones
    from coral_git.git.install import configure

    os.environ["GIT_CONFIG_GLOBAL"] = bc.GIT_ENV["GIT_CONFIG_GLOBAL"]
    configure("--global")  # coral's filter config too
    server, endpoint, client = start_moto()
    bc.GIT_ENV["AWS_ENDPOINT_URL"] = endpoint
    results: dict[str, Any] = {}
    try:
        if not args.skip_main:
            results["main"] = run_main(args, work, (client, endpoint, server))
        if args.compare_mib:
            results["compare"] = run_compare(args, work, (client, endpoint, server))
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    t0 = time.time()
    rc = main()
    bc.log(f"done in {time.time() - t0:.0f}s")
    sys.exit(rc)
