#!/usr/bin/env python3
"""coral-git vs git-lfs against the same Git LFS server (giftless 0.6.2 on 127.0.0.1).

A synthetic llama-like safetensors model (``--mib``, default 128 MiB; bench_core's generator) gets
``--versions`` fine-tuning-like versions. For each tool: commit them, ``git push`` the history to a
local bare repository whose ``lfs.url`` is the giftless server, ``git clone`` (latest version), and a
lazy checkout of the oldest version in a pointers-only clone.

Every byte between the git clients and giftless goes through a counting TCP proxy in this process
(HTTP headers included, both directions); requests are counted from giftless's own request log; the
"stored" column is the growth of giftless's storage directory. giftless ignores ``Range``, so coral
downloads whole packs there; the ``coral, Range`` rows read the same storage through a small
Range-honouring LFS server (tests/lfs_range_server.py, as S3/GCS presigned URLs behave).

Units: MB = 10^6 bytes. Progress on stderr, the report on stdout.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "helpers"))
import bench_core as bc  # noqa: E402
from lfs_range_server import RangeServer  # noqa: E402
from lfs_server import LfsServer  # noqa: E402

MB = 1e6
NAME = bc.LARGE_NAME


class CountingProxy:
    """A TCP forwarder to ``port`` counting the bytes each way."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.up = self.down = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            client, _ = self.sock.accept()
            server = socket.create_connection(("127.0.0.1", self.target))
            threading.Thread(target=self._pipe, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, "down"), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, way: str) -> None:
        try:
            while data := src.recv(1 << 18):
                dst.sendall(data)
                with self.lock:
                    setattr(self, way, getattr(self, way) + len(data))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def totals(self) -> tuple[int, int]:
        with self.lock:
            return self.up, self.down


def giftless_requests(server: LfsServer) -> int:
    return len(re.findall(r'"(?:GET|PUT|POST|HEAD) [^"]* HTTP/1\.[01]" \d{3}', server.log_tail(1 << 30)))


def giftless_puts(server: LfsServer) -> tuple[int, int, int]:
    """(PUTs, PUTs of an oid already PUT before, answers >= 500) in giftless's log so far."""
    log = server.log_tail(1 << 30)
    oids = re.findall(r'"PUT /[^ "]*/([0-9a-f]{64}) HTTP/1\.[01]" \d{3}', log)
    return len(oids), len(oids) - len(set(oids)), len(re.findall(r'HTTP/1\.[01]" 5\d\d', log))


class Meter:
    def __init__(self, server: LfsServer, proxy: CountingProxy) -> None:
        self.server, self.proxy = server, proxy

    def snap(self) -> tuple[int, int, int, int]:
        up, down = self.proxy.totals()
        return up, down, giftless_requests(self.server), bc.du_bytes(self.server.storage)[1]

    def diff(self, before: tuple[int, int, int, int]) -> dict[str, int]:
        after = self.snap()
        return {"up": after[0] - before[0], "down": after[1] - before[1], "requests": after[2] - before[2],
                "stored": after[3] - before[3]}


def run_tool(kind: str, work: Path, versions: list[bc.Version], meter: Meter, url: str,
             range_srv: RangeServer | None) -> dict[str, Any]:
    src, bare = work / f"src-{kind}", work / f"{kind}.git"
    bc.init_repo(src, kind, [NAME])
    for v in versions:
        shutil.copyfile(v.files[NAME], src / NAME)
        bc.git(src, "add", NAME)
        bc.git(src, "commit", "-qm", v.label)
    bc.git(work, "init", "-q", "--bare", str(bare))
    bc.git(src, "remote", "add", "origin", str(bare))
    bc.git(src, "config", "lfs.url", url)
    res: dict[str, Any] = {}
    bc.log(f"{kind}: push")
    before = meter.snap()
    puts0 = giftless_puts(meter.server)
    res["push_s"] = bc.git(src, "push", "-q", "origin", "HEAD:main").seconds
    res["push"] = meter.diff(before)
    res["puts"] = tuple(a - b for a, b in zip(giftless_puts(meter.server), puts0, strict=True))
    bc.log(f"{kind}: clone")
    clone = work / f"{kind}-clone"
    before = meter.snap()
    res["clone_s"] = bc.git(work, "clone", "-q", "-c", f"lfs.url={url}", str(bare), str(clone)).seconds
    res["clone"] = meter.diff(before)
    assert bc.sha256_file(clone / NAME) == versions[-1].sha[NAME], f"{kind}: clone not byte-exact"
    shutil.rmtree(clone)
    res["old_s"], res["old"] = lazy_oldest(kind, work, bare, url, versions, meter.snap, meter.diff)
    if range_srv is not None:
        bc.log(f"{kind}: clone and oldest checkout through the Range-honouring server")
        clone = work / f"{kind}-rclone"
        n0, b0, _ = range_srv.totals()
        res["rclone_s"] = bc.git(work, "clone", "-q", "-c", f"lfs.url={range_srv.lfs_url}", str(bare), str(clone)).seconds
        n1, b1, _ = range_srv.totals()
        res["rclone"] = {"requests": n1 - n0, "down": b1 - b0}
        assert bc.sha256_file(clone / NAME) == versions[-1].sha[NAME]
        shutil.rmtree(clone)

        def rsnap() -> tuple[int, int, bool]:
            return range_srv.totals()

        def rdiff(before: tuple[int, int, bool]) -> dict[str, int]:
            n, b, _ = range_srv.totals()
            return {"requests": n - before[0], "down": b - before[1]}

        res["rold_s"], res["rold"] = lazy_oldest(kind, work, bare, range_srv.lfs_url, versions, rsnap, rdiff, "r")
    return res


def lazy_oldest(kind: str, work: Path, bare: Path, url: str, versions: list[bc.Version], snap, diff,
                tag: str = "") -> tuple[float, dict[str, int]]:
    bc.log(f"{kind}: lazy checkout of the oldest version {tag}")
    lazy = work / f"{kind}-lazy{tag}"
    skip = {"CORAL_SKIP_SMUDGE": "1", "GIT_LFS_SKIP_SMUDGE": "1"}
    bc.GIT_ENV.update(skip)
    try:
        bc.git(work, "clone", "-q", "-c", f"lfs.url={url}", str(bare), str(lazy))
    finally:
        for k in skip:
            bc.GIT_ENV.pop(k, None)
    before = snap()
    secs = bc.git(lazy, "checkout", f"HEAD~{len(versions) - 1}", "--", NAME).seconds
    got = diff(before)
    assert bc.sha256_file(lazy / NAME) == versions[0].sha[NAME], f"{kind}: oldest version not byte-exact"
    shutil.rmtree(lazy)
    return secs, got


def render(res: dict[str, Any], title: str, file_bytes: int) -> str:
    out = [f"# coral-git vs git-lfs on one Git LFS server (giftless 0.6.2, 127.0.0.1): {title}",
           f"model file {file_bytes / MB:.1f} MB x {res['versions']} versions; MB = 10^6 bytes; wire = HTTP bytes both ways", "",
           "| tool | push: stored MB | push: wire up MB | push: requests | push s | clone: wire down MB | clone: requests | clone s | oldest: wire down MB | oldest: requests | oldest s |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in ("coral", "lfs"):
        r = res[kind]
        out.append(
            f"| {'coral-git' if kind == 'coral' else 'git-lfs'} | {r['push']['stored'] / MB:.1f} | {r['push']['up'] / MB:.1f} | "
            f"{r['push']['requests']} | {r['push_s']:.1f} | {r['clone']['down'] / MB:.1f} | {r['clone']['requests']} | "
            f"{r['clone_s']:.1f} | {r['old']['down'] / MB:.1f} | {r['old']['requests']} | {r['old_s']:.1f} |")
    c = res["coral"]
    if "rclone" in c:
        out.append(
            f"| coral-git, Range-honouring server | – | – | – | – | {c['rclone']['down'] / MB:.1f} | {c['rclone']['requests']} | "
            f"{c['rclone_s']:.1f} | {c['rold']['down'] / MB:.1f} | {c['rold']['requests']} | {c['rold_s']:.1f} |")
    lfs = res["lfs"]
    out += ["", "PUTs during the push (all, of an oid already sent, server answers >= 500): "
            + ", ".join(f"{k} {res[k]['puts']}" for k in ("coral", "lfs"))]
    out += ["", "ratios coral/git-lfs: "
            f"stored {c['push']['stored'] / lfs['push']['stored']:.2f}x, push wire {c['push']['up'] / lfs['push']['up']:.2f}x, "
            f"clone bytes {c['clone']['down'] / lfs['clone']['down']:.2f}x, clone time {c['clone_s'] / lfs['clone_s']:.2f}x, "
            f"oldest bytes {c['old']['down'] / lfs['old']['down']:.2f}x"
            + (f" (Range server: clone {c['rclone']['down'] / lfs['clone']['down']:.2f}x, oldest {c['rold']['down'] / lfs['old']['down']:.2f}x)" if "rclone" in c else "")]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=float, default=128)
    ap.add_argument("--versions", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--no-range", action="store_true", help="skip the Range-honouring server rows")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-remote-lfs-", dir=args.workdir))
    try:
        bc.setup_git_env(work)
        bc.git(work, "coral", "init", "--global")
        bc.git(work, "lfs", "install", "--skip-repo")
        bc.git(work, "config", "--global", "lfs.locksverify", "false")
        bc.log(f"generating {args.versions} versions of a {args.mib:.0f} MiB model")
        ds, _ = bc.make_large_versions(work / "data", int(args.mib * 2**20), args.versions, 0, args.seed)
        server = LfsServer(work / "giftless")
        server.start()
        range_srv = None if args.no_range else RangeServer(work / "range", server.storage / "coral" / "models")
        try:
            proxy = CountingProxy(server.port)
            url = f"http://127.0.0.1:{proxy.port}/coral/models.git/info/lfs"
            meter = Meter(server, proxy)
            res: dict[str, Any] = {"versions": len(ds.versions)}
            for kind in ("coral", "lfs"):
                res[kind] = run_tool(kind, work, ds.versions, meter, url, range_srv if kind == "coral" else None)
        finally:
            server.kill()
            if range_srv is not None:
                range_srv.stop()
        print(render(res, ds.title, ds.versions[0].nbytes))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
