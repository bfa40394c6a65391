"""``LfsClient.read_range`` refuses a 206 answer for another range than it asked for. The honest 206
path and giftless's 200 fallback are in test_lfs_client.py; this one needs a broken server: a small
real HTTP server on 127.0.0.1 (a separate process) serving the batch API and shifted ranges."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral_git.remote.lfs import Endpoint, LfsClient, LfsIntegrityError, LfsObject

SERVER = r'''
import json, os, re, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

ROOT, PORT, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        objs = []
        for o in body["objects"]:
            path = os.path.join(ROOT, o["oid"])
            if os.path.isfile(path) and os.path.getsize(path) == o["size"]:
                href = f"http://127.0.0.1:{PORT}/obj/{o['oid']}"
                objs.append({**o, "actions": {"download": {"href": href, "header": {"X-Test": "1"}}}})
            else:
                objs.append({**o, "error": {"code": 404, "message": "not found"}})
        data = json.dumps({"transfer": "basic", "objects": objs}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.git-lfs+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = os.path.join(ROOT, self.path.rsplit("/", 1)[-1])
        data = open(path, "rb").read()
        m = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        if m is None or self.headers.get("X-Test") != "1":
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        a, b = int(m.group(1)), int(m.group(2))
        if MODE == "shifted":  # a broken server: answers another range than asked
            a, b = a + 1, b + 1
        part = data[a : b + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        self.send_header("Content-Length", str(len(part)))
        self.end_headers()
        self.wfile.write(part)

ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path, mode: str) -> Iterator[tuple[str, Path]]:
    store = root / "objects"
    store.mkdir(parents=True)
    (root / "server.py").write_text(SERVER)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(root / "server.py"), str(store), str(port), mode])
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/org/repo.git/info/lfs", store
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def shifted_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    yield from _serve(tmp_path / "srv", "shifted")


def _put(store: Path, data: bytes) -> LfsObject:
    obj = LfsObject(hashlib.sha256(data).hexdigest(), len(data))
    (store / obj.oid).write_bytes(data)
    return obj


def test_a_wrong_range_answer_is_refused(shifted_server: tuple[str, Path]) -> None:
    url, store = shifted_server
    obj = _put(store, os.urandom(1 << 16))
    client = LfsClient(Endpoint(url, "test"), "origin")
    with pytest.raises(LfsIntegrityError, match="wrong bytes"):
        client.read_range(obj, 100, 50)
