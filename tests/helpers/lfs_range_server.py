"""A read-only Git LFS server that honours HTTP ``Range`` (as S3/GCS/Azure presigned storage URLs do),
serving a directory of objects named by oid — e.g. giftless's storage directory — for tests and
benchmarks of ranged pack reads. giftless 0.6.2 itself ignores Range. A separate process on 127.0.0.1;
it appends ``<method> <status> <body bytes>`` per request to ``requests.log`` beside its script."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

SERVER = r'''
import json, os, re, sys, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

ROOT, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lock = threading.Lock()

def note(method, status, n):
    with lock, open(LOG, "a") as f:
        f.write(f"{method} {status} {n}\n")

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        objs = []
        for o in body["objects"]:
            path = os.path.join(ROOT, o["oid"])
            if body.get("operation") == "download" and os.path.isfile(path) and os.path.getsize(path) == o["size"]:
                href = f"http://127.0.0.1:{PORT}/obj/{o['oid']}"
                objs.append({**o, "actions": {"download": {"href": href}}})
            else:
                objs.append({**o, "error": {"code": 404, "message": "not found (read-only server)"}})
        data = json.dumps({"transfer": "basic", "objects": objs}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.git-lfs+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        note("POST", 200, len(data))

    def do_GET(self):
        path = os.path.join(ROOT, self.path.rsplit("/", 1)[-1])
        size = os.path.getsize(path)
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        a, b, status = (0, size - 1, 200) if m is None else (int(m.group(1)), min(int(m.group(2)), size - 1), 206)
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
        self.send_header("Content-Length", str(b - a + 1))
        self.end_headers()
        with open(path, "rb") as f:
            f.seek(a)
            left = b - a + 1
            while left:
                block = f.read(min(left, 1 << 20))
                self.wfile.write(block)
                left -= len(block)
        note("GET", status, b - a + 1)

ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
'''


class RangeServer:
    """Serves ``objects`` (a directory of files named by oid) read-only with Range support."""

    def __init__(self, root: Path, objects: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.objects = root, objects
        (root / "range_server.py").write_text(SERVER)
        self.log = root / "requests.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, str(root / "range_server.py"), str(objects), str(self.port), str(self.log)])
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("range server did not start")

    @property
    def lfs_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/org/repo.git/info/lfs"

    def totals(self) -> tuple[int, int, bool]:
        """(requests, body bytes sent, whether any 206 was answered) so far."""
        if not self.log.exists():
            return 0, 0, False
        rows = [ln.split() for ln in self.log.read_text().splitlines() if ln.strip()]
        return len(rows), sum(int(r[2]) for r in rows), any(r[1] == "206" for r in rows)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
