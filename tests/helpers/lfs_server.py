"""A real Git LFS server for tests: giftless on 127.0.0.1 with local storage, killable and restartable.

Imported by the tests that need it (no conftest entry): ``from helpers.lfs_server import LfsServer, lfs_server``.
If giftless is not installed, starting the server raises, so those tests fail instead of skipping.

giftless's bundled anonymous authenticator refuses writes of single objects, so the server runs a tiny
authenticator written next to its config: it grants every permission on ``ORG/REPO`` and, when the
server is started with a user and password, only to requests carrying those basic-auth credentials.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ORG = "coral"
REPO = "models"

AUTH_MODULE = '''\
"""Grants every permission on one org/repo, to everyone or to one basic-auth user."""
import base64

from giftless.auth.identity import DefaultIdentity, Permission


def factory(organization, repo, user=None, password=None):
    def authenticate(request):
        if user is not None:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            try:
                got = base64.b64decode(header[6:]).decode()
            except Exception:
                return None
            if got != f"{user}:{password}":
                return None
        identity = DefaultIdentity(name=user or "test", id=user or "test")
        identity.allow(organization, repo, Permission.all())
        return identity

    return authenticate
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LfsServer:
    """One giftless process; ``kill()`` and ``start()`` keep the same port and storage."""

    def __init__(self, root: Path, user: str | None = None, password: str | None = None) -> None:
        self.root = root
        self.user = user
        self.password = password
        self.port = free_port()
        self.storage = root / "storage"
        self.proc: subprocess.Popen | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(exist_ok=True)
        (root / "coral_lfs_test_auth.py").write_text(AUTH_MODULE)
        options = f"organization: {ORG}\n      repo: {REPO}\n"
        if user is not None:
            options += f"      user: {user}\n      password: {password}\n"
        (root / "giftless.yaml").write_text(
            "LEGACY_ENDPOINTS: false\n"
            "PRE_AUTHORIZED_ACTION_PROVIDER: null\n"
            "AUTH_PROVIDERS:\n"
            "  - factory: coral_lfs_test_auth:factory\n"
            f"    options:\n      {options}"
            "TRANSFER_ADAPTERS:\n"
            "  basic:\n"
            "    factory: giftless.transfer.basic_streaming:factory\n"
            "    options:\n"
            "      storage_class: giftless.storage.local_storage:LocalStorage\n"
            "      storage_options:\n"
            f"        path: {self.storage}\n"
            "      action_lifetime: 900\n"
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lfs_url(self, org: str = ORG, repo: str = REPO) -> str:
        """The LFS endpoint of ``org/repo``, as ``lfs.url`` takes it."""
        return f"{self.base}/{org}/{repo}.git/info/lfs"

    def object_path(self, oid: str) -> Path:
        """Where giftless's local storage keeps ``oid`` (to check what a client left on the server)."""
        return self.storage / ORG / REPO / oid

    def start(self, timeout: float = 30.0) -> None:
        """Start giftless and wait until the batch endpoint answers."""
        env = {**os.environ, "GIFTLESS_CONFIG_FILE": str(self.root / "giftless.yaml")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.root), env.get("PYTHONPATH", "")])
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "giftless.wsgi_entrypoint", "run",
             "-h", "127.0.0.1", "-p", str(self.port), "--with-threads"],
            cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"giftless exited ({self.proc.returncode}):\n{self.log_tail()}")
            if self._answers():
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"giftless did not answer within {timeout}s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        req = urllib.request.Request(
            f"{self.lfs_url()}/objects/batch", method="POST",
            data=b'{"operation":"download","objects":[]}',
            headers={"Content-Type": "application/vnd.git-lfs+json", "Accept": "application/vnd.git-lfs+json"},
        )
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown: what a crash or a dropped connection looks like)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, n: int = 4000) -> str:
        try:
            return (self.root / "server.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""


def start_server(root: Path, user: str | None = None, password: str | None = None) -> LfsServer:
    """A started server; fails (never skips) when giftless or its imports are missing."""
    import giftless  # noqa: F401 - ImportError here is a test failure, by design

    server = LfsServer(root, user, password)
    server.start()
    return server


@pytest.fixture
def lfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LfsServer]:
    """An open giftless server (no credentials needed) for one test."""
    server = start_server(tmp_path_factory.mktemp("giftless"))
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def lfs_server_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LfsServer]:
    """A giftless server that grants access only to basic-auth user ``alice`` / ``s3cret``."""
    server = start_server(tmp_path_factory.mktemp("giftless-auth"), "alice", "s3cret")
    try:
        yield server
    finally:
        server.kill()
