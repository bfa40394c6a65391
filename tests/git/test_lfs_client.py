"""The Git LFS client against a real giftless server on 127.0.0.1, and beside the real git-lfs client."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import git
from helpers.lfs_server import LfsServer, free_port, lfs_server, lfs_server_auth, start_server  # noqa: F401 - fixtures

from coral_git.errors import CoralError
from coral_git.remote.lfs import (
    Action,
    Endpoint,
    GitConfig,
    LfsAuthError,
    LfsClient,
    LfsEndpointError,
    LfsIntegrityError,
    LfsObject,
    LfsUnreachableError,
    derive,
    parse_ssh,
    resolve,
)


def blob(path: Path, size: int) -> tuple[LfsObject, Path]:
    path.write_bytes(os.urandom(size))
    return LfsObject.of_file(path), path


def repo(path: Path, remote_url: str | None = None) -> Path:
    path.mkdir()
    git(path, "init", "-q")
    if remote_url is not None:
        git(path, "remote", "add", "origin", remote_url)
    return path


def client_for(server: LfsServer, **kw) -> LfsClient:
    return LfsClient(Endpoint(server.lfs_url(), "test"), remote="origin", **kw)


# -- endpoint resolution ----------------------------------------------------------------------------
def test_local_bare_remote_needs_lfs_url_and_precedence(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    work = repo(tmp_path / "work", str(bare))
    cfg = GitConfig(work)

    with pytest.raises(LfsEndpointError) as e:
        resolve("origin", config=cfg)
    assert "'origin'" in str(e.value) and "lfsurl" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(LfsEndpointError, match="no git remote named 'nope'"):
        resolve("nope", config=cfg)

    # a committed .lfsconfig gives the endpoint when git config has none
    (work / ".lfsconfig").write_text(f'[lfs]\n\turl = {lfs_server.lfs_url()}\n')
    git(work, "add", ".lfsconfig")
    git(work, "commit", "-qm", "lfsconfig")
    ep = resolve("origin", config=cfg)
    assert (ep.url, ep.source) == (lfs_server.lfs_url(), ".lfsconfig lfs.url")
    (work / ".lfsconfig").unlink()  # read from HEAD's blob when the work tree lacks it
    assert resolve("origin", config=cfg).source == ".lfsconfig lfs.url"

    # git config lfs.url beats .lfsconfig; remote.<name>.lfsurl beats lfs.url; pushurl for uploads
    git(work, "config", "lfs.url", "http://127.0.0.1:1/a/b.git/info/lfs")
    assert resolve("origin", config=cfg).source == "lfs.url"
    git(work, "config", "remote.origin.lfsurl", lfs_server.lfs_url() + "/")
    ep = resolve("origin", config=cfg)
    assert (ep.url, ep.source) == (lfs_server.lfs_url(), "remote.origin.lfsurl")
    git(work, "config", "lfs.pushurl", "http://127.0.0.1:2/x.git/info/lfs")
    assert resolve("origin", "upload", cfg).source == "lfs.pushurl"
    assert resolve("origin", "download", cfg).source == "remote.origin.lfsurl"

    # the resolved endpoint of the local bare remote stores objects on the LFS server
    obj, path = blob(tmp_path / "o", 1000)
    client = LfsClient(resolve("origin", "download", cfg), remote="origin", config=cfg)
    assert client.upload([(obj, path)]) == [obj.oid]
    assert client.has([obj]) == {obj.oid}
    assert lfs_server.object_path(obj.oid).read_bytes() == path.read_bytes()


def test_derived_endpoints_for_https_and_ssh(tmp_path: Path) -> None:
    assert derive("https://host/org/repo").url == "https://host/org/repo.git/info/lfs"
    assert derive("https://host/org/repo.git/").url == "https://host/org/repo.git/info/lfs"
    assert derive("/srv/repo.git") is None and derive("file:///srv/repo.git") is None
    ep = derive("git@host.example:org/repo.git")
    assert ep.url == "https://host.example/org/repo.git/info/lfs"
    assert ep.ssh.argv("upload") == ["ssh", "git@host.example", "git-lfs-authenticate", "org/repo.git", "upload"]
    ssh = parse_ssh("ssh://git@host.example:2222/org/repo")
    work = repo(tmp_path / "w", "https://host.example/org/repo")
    git(work, "remote", "set-url", "--push", "origin", "https://push.example/org/repo")
    assert resolve("origin", "download", GitConfig(work)).url == "https://host.example/org/repo.git/info/lfs"
    assert resolve("origin", "upload", GitConfig(work)).url == "https://push.example/org/repo.git/info/lfs"
    assert ssh.argv("download", "ssh -o BatchMode=yes") == [
        "ssh", "-o", "BatchMode=yes", "-p", "2222", "git@host.example", "git-lfs-authenticate", "org/repo", "download",
    ]


# -- transfers --------------------------------------------------------------------------------------
def test_upload_has_download_round_trip(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    files = [blob(tmp_path / f"b{i}", size) for i, size in enumerate([0, 1, 70_000, 3 << 20, 5 << 20])]
    client = client_for(lfs_server, concurrency=3)
    objs = [o for o, _ in files]
    assert client.has(objs) == set()
    assert sorted(client.upload(files)) == sorted(o.oid for o in objs)
    assert client.has(objs) == {o.oid for o in objs}
    assert client.upload(files) == []  # objects without actions: the server has them, nothing is sent
    assert client.stats["bytes_up"] == sum(o.size for o in objs)

    fresh = client_for(lfs_server)
    out = tmp_path / "down"
    out.mkdir()
    fresh.download([(o, out / o.oid) for o in objs])
    for o, p in files:
        assert (out / o.oid).read_bytes() == p.read_bytes()
    assert sorted(x.name for x in out.iterdir()) == sorted(o.oid for o in objs)  # no temp files left
    missing = LfsObject("ab" * 32, 5)
    assert fresh.has([missing, objs[2]]) == {objs[2].oid}


def test_concurrency_setting(tmp_path: Path) -> None:
    work = repo(tmp_path / "w")
    ep = Endpoint("http://127.0.0.1:1/a.git/info/lfs", "test")
    assert LfsClient(ep, config=GitConfig(work)).concurrency == 8
    git(work, "config", "coral.concurrentTransfers", "3")
    assert LfsClient(ep, config=GitConfig(work)).concurrency == 3


def test_range_read_or_whole_object_fallback(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    obj, path = blob(tmp_path / "pack", 2 << 20)
    client = client_for(lfs_server)
    client.upload([(obj, path)])
    data = path.read_bytes()
    reader = client_for(lfs_server)
    assert reader.read_range(obj, 1_000_000, 4096) == data[1_000_000:1_004_096]
    assert reader.read_range(obj, 0, 1) == data[:1]
    assert reader.read_range(obj, obj.size - 7, 7) == data[-7:]
    # giftless 0.6.2 (local storage) ignores Range and answers 200 with the whole object: the client
    # falls back to reading (and sha256-checking) the whole object and keeps the slice
    assert reader.range_supported is False
    assert reader.stats["bytes_down"] == 3 * obj.size
    with pytest.raises(ValueError):
        reader.read_range(obj, obj.size - 1, 2)


def test_damaged_server_copy_is_refused_and_nothing_is_left(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    obj, path = blob(tmp_path / "o", 100_000)
    client_for(lfs_server).upload([(obj, path)])
    stored = lfs_server.object_path(obj.oid)
    stored.write_bytes(os.urandom(obj.size))  # same size, other bytes
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(LfsIntegrityError) as e:
        client_for(lfs_server).download([(obj, out / "o")])
    assert "\n" not in str(e.value) and "origin" in str(e.value)
    assert list(out.iterdir()) == []


def test_server_killed_mid_upload_then_restarted_retry_completes(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    obj, path = blob(tmp_path / "big", 48 << 20)
    sent = 0
    restarted: list[threading.Thread] = []
    seen_on_disk: list[int] = []

    def progress(n: int) -> None:
        nonlocal sent
        sent += n
        if sent >= 16 << 20 and not restarted:
            lfs_server.kill()
            stored = lfs_server.object_path(obj.oid)
            seen_on_disk.append(stored.stat().st_size if stored.exists() else 0)
            # what a reader sees while the server is down and then back: a half-written file is no object
            t = threading.Thread(target=lfs_server.start)
            restarted.append(t)
            t.start()

    client = client_for(lfs_server, backoff=0.5, retries=8)  # restarting flask may take a while under load
    try:
        assert client.upload([(obj, path)], progress=progress) == [obj.oid]
    finally:
        for t in restarted:
            t.join()
    assert restarted and client.stats["retries"] >= 1
    assert seen_on_disk[0] < obj.size
    assert hashlib.sha256(lfs_server.object_path(obj.oid).read_bytes()).hexdigest() == obj.oid
    assert client_for(lfs_server).has([obj]) == {obj.oid}


def test_half_written_object_is_not_visible(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    """What a kill mid-PUT leaves on giftless's disk: the batch API reports no object, so a retry sends it again."""
    obj, path = blob(tmp_path / "o", 1 << 20)
    stored = lfs_server.object_path(obj.oid)
    stored.parent.mkdir(parents=True, exist_ok=True)
    stored.write_bytes(path.read_bytes()[: obj.size // 2])
    client = client_for(lfs_server)
    assert client.has([obj]) == set()
    assert client.upload([(obj, path)]) == [obj.oid]
    assert stored.read_bytes() == path.read_bytes()


def test_unreachable_server_one_line(tmp_path: Path) -> None:
    client = LfsClient(Endpoint(f"http://127.0.0.1:{free_port()}/a/b.git/info/lfs", "test"), remote="origin",
                       retries=1, backoff=0.01)
    with pytest.raises(LfsUnreachableError) as e:
        client.has([LfsObject("ab" * 32, 1)])
    msg = str(e.value)
    assert isinstance(e.value, CoralError) and "\n" not in msg and "'origin'" in msg and "retry" in msg


# -- authentication ---------------------------------------------------------------------------------
def store_helper(work: Path, creds: Path, user: str, password: str, port: int) -> None:
    creds.write_text(f"http://{user}:{password}@127.0.0.1%3a{port}\n")
    git(work, "config", "credential.helper", f"store --file={creds}")


def test_wrong_credentials_one_clear_line_and_rejected(tmp_path: Path, lfs_server_auth: LfsServer, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    work = repo(tmp_path / "w")
    creds = tmp_path / "creds"
    store_helper(work, creds, "alice", "wrong", lfs_server_auth.port)
    client = LfsClient(Endpoint(lfs_server_auth.lfs_url(), "lfs.url"), remote="origin", config=GitConfig(work))
    with pytest.raises(LfsAuthError) as e:
        client.has([LfsObject("ab" * 32, 1)])
    msg = str(e.value)
    assert "\n" not in msg and "'origin'" in msg and "refused the credentials for user 'alice'" in msg
    assert "credential helper" in msg
    assert "wrong" not in creds.read_text()  # git credential reject made the store helper forget them


def test_no_credentials_one_clear_line(tmp_path: Path, lfs_server_auth: LfsServer, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    work = repo(tmp_path / "w")
    client = LfsClient(Endpoint(lfs_server_auth.lfs_url(), "lfs.url"), remote="origin", config=GitConfig(work))
    with pytest.raises(LfsAuthError, match="asks for credentials and git has none") as e:
        client.has([LfsObject("ab" * 32, 1)])
    assert "\n" not in str(e.value)


def test_right_credentials_from_helper_are_approved(tmp_path: Path, lfs_server_auth: LfsServer, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    work = repo(tmp_path / "w")
    creds = tmp_path / "creds"
    store_helper(work, creds, "alice", "s3cret", lfs_server_auth.port)
    client = LfsClient(Endpoint(lfs_server_auth.lfs_url(), "lfs.url"), remote="origin", config=GitConfig(work))
    obj, path = blob(tmp_path / "o", 50_000)
    assert client.upload([(obj, path)]) == [obj.oid]
    assert client.has([obj]) == {obj.oid}
    assert "alice:s3cret@" in creds.read_text()


def test_extra_header_authenticates(tmp_path: Path, lfs_server_auth: LfsServer, monkeypatch) -> None:  # noqa: F811
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    work = repo(tmp_path / "w")
    token = base64.b64encode(b"alice:s3cret").decode()
    git(work, "config", f"http.{lfs_server_auth.base}/.extraHeader", f"Authorization: Basic {token}")
    client = LfsClient(Endpoint(lfs_server_auth.lfs_url(), "lfs.url"), remote="origin", config=GitConfig(work))
    obj, path = blob(tmp_path / "o", 10_000)
    assert client.upload([(obj, path)]) == [obj.oid]
    other = LfsClient(Endpoint(lfs_server_auth.lfs_url(), "lfs.url"), remote="origin", config=GitConfig(tmp_path))
    with pytest.raises(LfsAuthError):
        other.has([obj])


# -- interop with git-lfs ---------------------------------------------------------------------------
def test_git_lfs_push_and_pull_beside_coral_objects(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    ours, our_path = blob(tmp_path / "pack", 200_000)
    client_for(lfs_server).upload([(ours, our_path)])

    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    work = repo(tmp_path / "work", str(bare))
    git(work, "lfs", "install", "--local")
    git(work, "lfs", "track", "*.bin")
    (work / ".lfsconfig").write_text(f"[lfs]\n\turl = {lfs_server.lfs_url()}\n")
    content = os.urandom(300_000)
    (work / "data.bin").write_bytes(content)
    git(work, "add", ".gitattributes", ".lfsconfig", "data.bin")
    git(work, "commit", "-qm", "lfs file")
    git(work, "push", "-q", "origin", "HEAD:main")
    git(work, "lfs", "push", "origin", "main")  # explicit, in case the hook did nothing
    oid = hashlib.sha256(content).hexdigest()
    assert lfs_server.object_path(oid).read_bytes() == content

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(bare), str(clone), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (clone / "data.bin").read_bytes() != content  # a pointer
    git(clone, "lfs", "install", "--local")
    git(clone, "lfs", "pull", "origin")
    assert (clone / "data.bin").read_bytes() == content

    # both kinds of object live side by side, each readable by both clients
    ep = resolve("origin", config=GitConfig(clone))
    assert (ep.url, ep.source) == (lfs_server.lfs_url(), ".lfsconfig lfs.url")
    client = LfsClient(ep, remote="origin", config=GitConfig(clone))
    theirs = LfsObject(oid, len(content))
    assert client.has([ours, theirs]) == {ours.oid, oid}
    client.download([(theirs, tmp_path / "theirs")])
    assert (tmp_path / "theirs").read_bytes() == content
    pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{ours.oid}\nsize {ours.size}\n"
    proc = subprocess.run(["git", "lfs", "smudge"], cwd=clone, input=pointer.encode(), capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == our_path.read_bytes()  # git-lfs downloads the object coral uploaded


def test_ssh_remote_uses_git_lfs_authenticate(tmp_path: Path, lfs_server_auth: LfsServer, monkeypatch) -> None:  # noqa: F811
    """An ssh remote: the client runs ``<ssh> [-p port] user@host git-lfs-authenticate <path> <op>`` and
    uses the href and headers it prints. No sshd here, so GIT_SSH_COMMAND names a stand-in for the
    host's git-lfs-authenticate that logs its argv; the LFS server behind it is the real one."""
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    token = base64.b64encode(b"alice:s3cret").decode()
    log = tmp_path / "ssh.log"
    script = tmp_path / "ssh-standin"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        f"printf '%s' '{{\"href\": \"{lfs_server_auth.lfs_url()}\", \"header\": {{\"Authorization\": \"Basic {token}\"}}}}'\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", f"{script} -o BatchMode=yes")
    work = repo(tmp_path / "w", "ssh://git@models.example:2222/coral/models.git")
    ep = resolve("origin", config=GitConfig(work))
    assert ep.ssh is not None and ep.url == "https://models.example/coral/models.git/info/lfs"
    client = LfsClient(ep, remote="origin", config=GitConfig(work))
    obj, path = blob(tmp_path / "o", 20_000)
    assert client.upload([(obj, path)]) == [obj.oid]
    assert client.has([obj]) == {obj.oid}
    assert log.read_text().splitlines() == [
        "-o BatchMode=yes -p 2222 git@models.example git-lfs-authenticate coral/models.git upload",
        "-o BatchMode=yes -p 2222 git@models.example git-lfs-authenticate coral/models.git download",
    ]

    script.write_text("#!/bin/sh\necho 'Permission denied (publickey).' >&2\nexit 255\n")
    with pytest.raises(LfsAuthError) as e:
        LfsClient(ep, remote="origin", config=GitConfig(work)).has([obj])
    assert "\n" not in str(e.value) and "Permission denied" in str(e.value) and "'origin'" in str(e.value)


RANGE_APP = """\
import os
from flask import Flask, send_from_directory

app = Flask(__name__)


@app.get("/objects/<name>")
def get(name):
    return send_from_directory(os.environ["OBJECTS_DIR"], name, conditional=True)
"""


def test_range_read_where_the_server_honours_range(tmp_path: Path) -> None:
    """The 206 path, against a real HTTP server that honours Range (werkzeug's conditional file
    responses, as the storage behind many LFS servers does: S3, GCS, Azure presigned URLs)."""
    objects = tmp_path / "objects"
    objects.mkdir()
    obj, path = blob(objects / "pack", 1 << 20)
    (tmp_path / "range_app.py").write_text(RANGE_APP)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "range_app", "run", "-h", "127.0.0.1", "-p", str(port)],
        cwd=tmp_path, env={**os.environ, "OBJECTS_DIR": str(objects)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        href = f"http://127.0.0.1:{port}/objects/pack"
        for _ in range(100):
            try:
                urllib.request.urlopen(href, timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        client = LfsClient(Endpoint(f"http://127.0.0.1:{port}/lfs", "test"), remote="origin")
        data = path.read_bytes()
        assert client.read_range(obj, 300_000, 5000, Action(href, {})) == data[300_000:305_000]
        assert client.range_supported is True
        assert client.read_range(obj, obj.size - 3, 3, Action(href, {})) == data[-3:]
        assert client.stats["bytes_down"] == 5003
        read = client.range_reader(obj, tmp_path / "spool", Action(href, {}))
        assert read(10, 20) == data[10:30]
        assert not (tmp_path / "spool").exists() and client.stats["bytes_down"] == 5023
    finally:
        proc.kill()
        proc.wait()


def test_range_reader_downloads_a_pack_at_most_once(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    obj, path = blob(tmp_path / "pack", 1 << 20)
    client_for(lfs_server).upload([(obj, path)])
    data = path.read_bytes()
    client = client_for(lfs_server)
    read = client.range_reader(obj, tmp_path / "spool")
    for off in (0, 500_000, obj.size - 10, 123):
        assert read(off, 10) == data[off : off + 10]
    assert client.range_supported is False  # giftless: the first read took the whole object ...
    assert client.stats["bytes_down"] == obj.size  # ... and the others were local
    assert (tmp_path / "spool").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack", "spool"]


def test_transfers_run_at_most_concurrency_at_once(tmp_path: Path, lfs_server: LfsServer) -> None:  # noqa: F811
    files = [blob(tmp_path / f"b{i}", 2 << 20) for i in range(8)]
    active, peak = 0, 0
    lock = threading.Lock()
    seen: set[int] = set()

    def progress(n: int) -> None:
        with lock:
            seen.add(threading.get_ident())

    client = client_for(lfs_server, concurrency=3)
    put = client._put

    def counted(*args):  # count transfers in flight around the real PUT
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            return put(*args)
        finally:
            with lock:
                active -= 1

    client._put = counted
    assert len(client.upload(files, progress=progress)) == 8
    assert 1 < peak <= 3 and 1 < len(seen) <= 4  # the first PUT goes alone, in the calling thread
    assert client_for(lfs_server).has([o for o, _ in files]) == {o.oid for o, _ in files}
