"""The LFS client against what real hosts do and giftless does not: signed hrefs that expire, batch
errors per the spec, rate limiting, and ``http.<url>.extraHeader`` scoped by git's URL rules.

One small LFS server (Flask, a real process on 127.0.0.1) serves every case; the repository name in
the URL picks its behaviour:

- ``expiring``: hrefs carry a token valid 1 s and say so (``expires_in: 1``); PUTs take 0.6 s;
- ``silent``: the same tokens, but the answer does not say they expire (only a 403 tells);
- ``revoked``: every href answers 403;
- ``missing`` / ``invalid``: the batch endpoint answers 404 / 422 (repository unknown, bad request);
- ``busy``: the first batch request answers 429 with ``Retry-After: 1``; ``down``: 503 ``Retry-After: 3600``;
- anything else: a plain server. Storage hrefs live under ``/storage/<repo>/<oid>``.

``GET /_log`` returns every request seen (path, status, ``X-*`` headers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import git
from helpers.lfs_server import free_port

from coral_git.errors import RemoteError
from coral_git.remote.lfs import (
    Endpoint,
    GitConfig,
    LfsAuthError,
    LfsClient,
    LfsError,
    LfsObject,
    LfsUnreachableError,
    resolve,
)
from coral_git.remote.lfs.client import _action, _retry_after

HOST_APP = '''\
import threading
import time
import secrets

from flask import Flask, jsonify, request

app = Flask(__name__)
lock = threading.Lock()
objects = {}  # (repo, oid) -> bytes
tokens = {}  # token -> expiry (time.time()), None: refused
log = []
batches = {}


def record(status):
    with lock:
        log.append({"path": request.path, "method": request.method, "status": status,
                    "headers": {k: v for k, v in request.headers.items() if k.lower().startswith("x-")}})


def href(repo, oid):
    token = secrets.token_hex(8)
    tokens[token] = None if repo == "revoked" else time.time() + (1.0 if repo in ("expiring", "silent") else 3600)
    action = {"href": f"{request.host_url}storage/{repo}/{oid}?token={token}"}
    if repo == "expiring":
        action["expires_in"] = 1
    return action


@app.post("/<repo>/info/lfs/objects/batch")
def batch(repo):
    with lock:
        batches[repo] = batches.get(repo, 0) + 1
        first = batches[repo] == 1
    if repo == "missing":
        record(404)
        return jsonify(message="Repository not found"), 404
    if repo == "invalid":
        record(422)
        return jsonify(message="Object size exceeds the limit"), 422
    if repo == "busy" and first:
        record(429)
        return jsonify(message="Rate limit exceeded"), 429, {"Retry-After": "1"}
    if repo == "down":
        record(503)
        return jsonify(message="Down for maintenance"), 503, {"Retry-After": "3600"}
    body = request.get_json(force=True)
    out = []
    for o in body["objects"]:
        have = (repo, o["oid"]) in objects
        entry = {"oid": o["oid"], "size": o["size"]}
        if body["operation"] == "upload":
            if not have:
                entry["actions"] = {"upload": href(repo, o["oid"])}
        elif have:
            entry["actions"] = {"download": href(repo, o["oid"])}
        else:
            entry["error"] = {"code": 404, "message": "Object does not exist"}
        out.append(entry)
    record(200)
    return jsonify(transfer="basic", objects=out), 200, {"Content-Type": "application/vnd.git-lfs+json"}


def allowed():
    expiry = tokens.get(request.args.get("token", ""), 0)
    return expiry is not None and time.time() < expiry


@app.put("/storage/<repo>/<oid>")
def put(repo, oid):
    if not allowed():
        record(403)
        return jsonify(message="Request has expired"), 403
    data = request.get_data()
    if repo == "expiring":
        time.sleep(0.6)
    objects[(repo, oid)] = data
    record(200)
    return "", 200


@app.get("/storage/<repo>/<oid>")
def get(repo, oid):
    if not allowed():
        record(403)
        return jsonify(message="Request has expired"), 403
    record(200)
    return objects[(repo, oid)], 200


@app.get("/_log")
def show_log():
    return jsonify(log)
'''


class Host:
    def __init__(self, port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"

    def url(self, repo: str) -> str:
        return f"{self.base}/{repo}/info/lfs"

    def client(self, repo: str, config: GitConfig | None = None, **kw) -> LfsClient:
        return LfsClient(Endpoint(self.url(repo), "lfs.url"), remote="origin", config=config, **kw)

    def log(self, prefix: str = "") -> list[dict]:
        with urllib.request.urlopen(f"{self.base}/_log", timeout=5) as r:
            return [e for e in json.load(r) if e["path"].startswith(prefix)]


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    root = tmp_path_factory.mktemp("lfshost")
    (root / "host_app.py").write_text(HOST_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "host_app", "run", "-h", "127.0.0.1", "-p", str(port), "--with-threads"],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        h = Host(port)
        for _ in range(300):
            try:
                h.log()
                break
            except OSError:
                time.sleep(0.05)
        yield h
    finally:
        proc.kill()
        proc.wait()


def blob(path: Path, size: int) -> tuple[LfsObject, Path]:
    path.write_bytes(os.urandom(size))
    return LfsObject.of_file(path), path


# -- expiring hrefs ---------------------------------------------------------------------------------
def test_expiring_hrefs_are_renewed_before_use(tmp_path: Path, host: Host) -> None:
    """expires_in = 1 s and each PUT takes 0.6 s: one at a time, the later PUTs would go out with an
    expired token; the client asks for new hrefs first, and the server refuses nothing."""
    files = [blob(tmp_path / f"o{i}", 10_000 + i) for i in range(3)]
    client = host.client("expiring", concurrency=1)
    assert sorted(client.upload(files)) == sorted(o.oid for o, _ in files)
    assert client.stats["renewals"] >= 2
    # a range reader holding an action from before (what the LFS store caches per pack) renews it once
    obj, path = files[0]
    action = client.download_actions([obj])[obj.oid]
    assert action.expires_at is not None and action.expires_at - time.time() <= 1.0
    read = client.range_reader(obj, tmp_path / "spool", action)
    time.sleep(1.1)
    before = client.stats["renewals"]
    assert read(5, 100) == path.read_bytes()[5:105]
    assert client.stats["renewals"] == before + 1
    # renewed before use: nothing refused — one 403 is tolerated only because a loaded machine can take more
    # than the 0.5 s renewal margin between the batch answer and the request (the client then recovers)
    assert len([e for e in host.log("/storage/expiring") if e["status"] != 200]) <= 1


def test_href_refused_gets_one_new_batch_then_a_clear_line(tmp_path: Path, host: Host) -> None:
    """A host that does not say when hrefs expire: the 403 from storage triggers one new batch request."""
    obj, path = blob(tmp_path / "o", 20_000)
    client = host.client("silent")
    client.upload([(obj, path)])
    action = client.download_actions([obj])[obj.oid]
    assert action.expires_at is None
    time.sleep(1.1)
    client.read_range(obj, 0, 10, action)  # stale: 403, renewed, read
    assert client.stats["renewals"] == 1
    assert [e["status"] for e in host.log("/storage/silent") if e["method"] == "GET"] == [403, 200]

    # hrefs refused even when new: one line naming the remote, after exactly one renewal
    with pytest.raises(LfsAuthError) as e:
        host.client("revoked").upload([(obj, path)])
    msg = str(e.value)
    assert "\n" not in msg and "'origin'" in msg and "403" in msg and "even with a new href" in msg
    assert [e["status"] for e in host.log("/storage/revoked")] == [403, 403]


def test_action_expiry_fields() -> None:
    now = 1_000_000.0
    a = _action({"href": "h", "expires_in": 60, "expires_at": "2000-01-01T00:00:00Z"}, now)
    assert a.expires_at == now + 60  # expires_in wins, as the spec says
    assert not a.expiring(now + 54) and a.expiring(now + 55.5)  # renewed 5 s before
    assert _action({"href": "h", "expires_at": "2016-11-10T15:29:07Z"}, now).expires_at == 1478791747.0
    assert _action({"href": "h", "expires_at": "0001-01-01T00:00:00Z"}, now).expires_at is None  # Go's zero time
    assert _action({"href": "h", "expires_in": 0}, now).expires_at is None
    short = _action({"href": "h", "expires_in": 2}, now)
    assert not short.expiring(now + 0.9) and short.expiring(now + 1.0)  # margin: half a short lifetime
    assert _retry_after("7") == 7.0 and _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


# -- batch errors -----------------------------------------------------------------------------------
def test_batch_404_422_and_missing_objects_are_one_clear_line(tmp_path: Path, host: Host) -> None:
    obj = LfsObject("ab" * 32, 5)
    with pytest.raises(LfsError) as e:
        host.client("missing").has([obj])
    msg = str(e.value)
    assert isinstance(e.value, RemoteError) and "\n" not in msg
    assert f"remote 'origin' ({host.url('missing')}) answered 404 to the download batch request (Repository not found)" in msg
    assert "the repository does not exist there or your account may not read it" in msg

    with pytest.raises(LfsError) as e:
        host.client("invalid").upload([blob(tmp_path / "o", 100)])
    assert "rejected the upload batch request as invalid (422: Object size exceeds the limit)" in str(e.value)

    # per-object 404: the object is missing (has() says no; a download names the object)
    client = host.client("plain")
    assert client.has([obj]) == set()
    with pytest.raises(LfsError) as e:
        client.download([(obj, tmp_path / "x")])
    assert f"does not have object {obj.oid} (404: Object does not exist); push it from a repository" in str(e.value)


def test_429_with_retry_after_then_success_and_503_for_an_hour_fails_at_once(tmp_path: Path, host: Host) -> None:
    obj, path = blob(tmp_path / "o", 1000)
    client = host.client("busy", backoff=0.01)
    t0 = time.monotonic()
    assert client.upload([(obj, path)]) == [obj.oid]
    assert time.monotonic() - t0 >= 0.95  # Retry-After: 1, not the 10 ms backoff
    assert client.stats["retries"] == 1
    assert [e["status"] for e in host.log("/busy/")] == [429, 200]

    t0 = time.monotonic()
    with pytest.raises(LfsUnreachableError) as e:
        host.client("down").has([obj])
    assert time.monotonic() - t0 < 5  # an hour's Retry-After is not slept through
    msg = str(e.value)
    assert "\n" not in msg and "kept answering 503 (Down for maintenance)" in msg and "wait 3600 s" in msg


# -- http.<url>.extraHeader -------------------------------------------------------------------------
def test_extra_header_scoped_by_git_url_rules(tmp_path: Path, host: Host) -> None:
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q")
    settings = [
        ("http.extraHeader", "X-All: 1"),
        (f"http.{host.base}/hdr-a.extraHeader", "X-Repo: a"),
        (f"http.{host.base}/hdr-a.extraHeader", "X-Repo2: a2"),  # multi-valued: both are sent
        (f"http.http://localhost:{host.port}/.extraHeader", "X-Host: localhost"),  # other host
        (f"http.http://127.0.0.1:{free_port()}/.extraHeader", "X-Port: other"),  # other port
        (f"http.https://127.0.0.1:{host.port}/.extraHeader", "X-Scheme: https"),  # other scheme
        (f"http.{host.base}/storage/.extraHeader", "X-Storage: 1"),
    ]
    for key, value in settings:
        git(work, "config", "--add", key, value)
    for repo in ("hdr-a", "hdr-ab"):
        obj, path = blob(tmp_path / repo, 500)
        client = host.client(repo, GitConfig(work))
        client.upload([(obj, path)])
        client.download([(obj, tmp_path / f"{repo}.down")])

    def sent(prefix: str) -> set[frozenset]:
        return {frozenset(e["headers"].items()) for e in host.log(prefix)}

    # as git's own http code: every entry at least as specific as the best one before it, in config
    # order; "/hdr-a" matches /hdr-a/… on a segment boundary, never /hdr-ab/…
    assert sent("/hdr-a/") == {frozenset({"X-All": "1", "X-Repo": "a", "X-Repo2": "a2"}.items())}
    assert sent("/hdr-ab/") == {frozenset({"X-All": "1"}.items())}
    assert sent("/storage/hdr-a") == {frozenset({"X-All": "1", "X-Storage": "1"}.items())}

    # http.<url>.sslVerify / sslCAInfo by the same rules
    git(work, "config", f"http.{host.base}/hdr-a.sslVerify", "false")
    git(work, "config", "http.https://*.example.org/.sslCAInfo", "/etc/ca.pem")
    cfg = GitConfig(work)
    assert not cfg.http(f"{host.base}/hdr-a/x").ssl_verify and cfg.http(f"{host.base}/hdr-ab/x").ssl_verify
    assert cfg.http("https://lfs.example.org/a").ca_info == "/etc/ca.pem" and cfg.http("https://example.org/a").ca_info is None

    # an empty value resets the list (a repository dropping headers it inherits)
    git(work, "config", "--add", "http.extraHeader", "")
    assert GitConfig(work).http(f"{host.base}/other/x").headers == ()


def test_ssh_grant_renewed_when_it_expires(tmp_path: Path, host: Host, monkeypatch) -> None:
    """git-lfs-authenticate answers with expires_in (GitLab's grants last minutes): asked again when spent."""
    log = tmp_path / "ssh.log"
    script = tmp_path / "ssh-standin"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        f"printf '%s' '{{\"href\": \"{host.url('plain')}\", \"header\": {{\"X-Grant\": \"g\"}}, \"expires_in\": 1}}'\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    work = tmp_path / "w"
    work.mkdir()
    git(work, "init", "-q")
    git(work, "remote", "add", "origin", "git@models.example:coral/models.git")
    client = LfsClient(resolve("origin", config=GitConfig(work)), remote="origin", config=GitConfig(work))
    obj = LfsObject("cd" * 32, 3)
    assert client.has([obj]) == set()
    assert client.has([obj]) == set()  # the grant still holds: no second ssh
    time.sleep(1.1)
    assert client.has([obj]) == set()
    assert len(log.read_text().splitlines()) == 2
