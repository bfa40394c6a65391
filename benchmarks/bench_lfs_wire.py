#!/usr/bin/env python3
"""Wire packs through a real Git LFS server (giftless on 127.0.0.1): requests, bytes and seconds.

A chunk store gets ``--mib`` MiB of float32 chunks (~1 MiB each, as coral chunks tensors). Measured:

* upload as **wire packs** (~64 MiB each, plus one index per pack) vs **one LFS object per stored
  object** (what a loose-object remote would do), through ``coral_git.remote.lfs.LfsClient``;
* ``git lfs push`` of a file holding the same raw bytes to the same server (git-lfs's own figure);
* reading ``--reads`` single objects out of the packs: by HTTP Range against a server that honours it
  (giftless's storage directory served by werkzeug) vs giftless itself, which ignores Range, so each
  read costs a whole pack.

Units: MB = 10^6 bytes. Progress on stderr, the report on stdout.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from lfs_server import LfsServer, free_port  # noqa: E402

from coral_git.remote.lfs import Action, Endpoint, LfsClient, LfsObject  # noqa: E402
from coral_git.remote.wirepack import WireItem, build_packs, parse_index, read_object  # noqa: E402
from coral_git.store.chunkstore import ChunkStore, chunk_id  # noqa: E402

RANGE_APP = """\
import os
from flask import Flask, send_from_directory
app = Flask(__name__)
@app.get("/objects/<name>")
def get(name):
    return send_from_directory(os.environ["OBJECTS_DIR"], name, conditional=True)
"""


def mb(n: int) -> str:
    return f"{n / 1e6:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=128)
    ap.add_argument("--reads", type=int, default=16)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-lfs-wire-"))
    server = LfsServer(tmp / "giftless")
    server.start()
    range_proc = None
    try:
        print(f"building a store of {args.mib} MiB ...", file=sys.stderr)
        store = ChunkStore(tmp / "store")
        rng = np.random.default_rng(1)
        cids, raw_total = [], 0
        for _ in range(args.mib):
            raw = (rng.standard_normal(1 << 18).astype(np.float32) * 0.02).view(np.uint8)
            store.put(raw, 4)
            cids.append(chunk_id(raw))
            raw_total += raw.size
        items = [WireItem(c, len(store.read_object_local(c)), lambda c=c: store.read_object_local(c)) for c in cids]
        stored_total = sum(it.length for it in items)

        t = time.perf_counter()
        packs = list(build_packs(items, tmp / "wire"))
        t_build = time.perf_counter() - t

        rows = []
        client = LfsClient(Endpoint(server.lfs_url(), "bench"), remote="bench")
        files = [(LfsObject(p.oid, p.size), p.path) for p in packs] + [
            (LfsObject(p.index_oid, p.index_size), p.index_path) for p in packs]
        t = time.perf_counter()
        client.upload(files)
        rows.append(("coral wire packs", client.stats["requests"], client.stats["bytes_up"], time.perf_counter() - t))

        loose_dir = tmp / "loose"
        loose_dir.mkdir()
        loose = []
        for it in items:
            path = loose_dir / it.cid
            path.write_bytes(it.read())
            loose.append((LfsObject.of_file(path), path))
        client = LfsClient(Endpoint(server.lfs_url(), "bench"), remote="bench")
        t = time.perf_counter()
        client.upload(loose)
        rows.append(("coral one object per chunk", client.stats["requests"], client.stats["bytes_up"], time.perf_counter() - t))

        repo = tmp / "gitlfs"
        repo.mkdir()
        env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b",
               "GIT_COMMITTER_EMAIL": "b@b"}

        def g(*a: str) -> None:
            subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True, env=env)

        g("init", "-q")
        g("lfs", "install", "--local")
        g("lfs", "track", "*.bin")
        with open(repo / "model.bin", "wb") as f:
            for c in cids:
                f.write(store.get(c).tobytes())
        g("add", ".")
        g("commit", "-qm", "m")
        g("init", "-q", "--bare", str(tmp / "bare.git"))
        g("remote", "add", "origin", str(tmp / "bare.git"))
        g("config", "lfs.url", server.lfs_url("coral", "models"))
        t = time.perf_counter()
        g("lfs", "push", "--all", "origin")
        rows.append(("git lfs push (same raw bytes)", None, raw_total, time.perf_counter() - t))

        print(f"model: {mb(raw_total)} MB raw, {mb(stored_total)} MB stored; {len(packs)} wire packs "
              f"(+{len(packs)} indexes, {sum(p.index_size for p in packs)} bytes) built in {t_build:.2f} s")
        print(f"{'upload':32} {'requests':>9} {'MB sent':>9} {'seconds':>8}")
        for name, req, sent, sec in rows:
            print(f"{name:32} {req if req is not None else '-':>9} {mb(sent):>9} {sec:8.2f}")

        # ranged reads of single objects out of the packs
        (tmp / "range_app.py").write_text(RANGE_APP)
        port = free_port()
        range_proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "range_app", "run", "-h", "127.0.0.1", "-p", str(port)],
            cwd=tmp, env={**os.environ, "OBJECTS_DIR": str(server.storage / "coral" / "models")},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/objects/{packs[0].index_oid}", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        picks = random.Random(3).sample([(p, e) for p in packs for e in parse_index(p.index_path.read_bytes())], args.reads)
        print(f"\nreading {args.reads} single objects (~{mb(picks[0][1].length)} MB each) out of the packs")
        print(f"{'server':40} {'MB fetched':>11} {'seconds':>8} {'range honoured':>15}")
        modes = (
            ("werkzeug (honours Range)", lambda p: f"http://127.0.0.1:{port}/objects/{p.oid}", False),
            ("giftless, read_range per object", None, False),
            ("giftless, range_reader (pack spooled)", None, True),
        )
        for name, href, spooled in modes:
            client = LfsClient(Endpoint(server.lfs_url(), "bench"), remote="bench")
            readers: dict = {}
            t = time.perf_counter()
            for p, e in picks:
                obj = LfsObject(p.oid, p.size)
                action = Action(href(p), {}) if href else None
                if spooled:
                    if p.oid not in readers:
                        readers[p.oid] = client.range_reader(obj, tmp / f"spool-{p.oid}")
                    reader = readers[p.oid]
                else:
                    def reader(off, n, obj=obj, action=action, c=client):
                        return c.read_range(obj, off, n, action)
                data = read_object(e, reader)
                assert data == store.read_object_local(e.cid)
            print(f"{name:40} {mb(client.stats['bytes_down']):>11} {time.perf_counter() - t:8.2f} {client.range_supported!s:>15}")
    finally:
        if range_proc is not None:
            range_proc.kill()
            range_proc.wait()
        server.kill()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
