"""Sharing through an S3-compatible store: a moto server on loopback, started by the tests."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import coral, git, make_state, perturb, save_safetensors, sha256
from helpers.lfs_server import free_port

from coral_git.core import pointer as ptr
from coral_git.store.objects import LooseObjects, unpack_header

BUCKET = "coral-test"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with one bucket; yields its endpoint URL."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    ).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """AWS settings pointing at the moto server (and nothing from the host's AWS config)."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")


def remote_objects(client, prefix: str) -> dict[str, bytes]:
    """Every object under ``s3://BUCKET/prefix/``, by chunk id: loose ones (``objects/``) and those in
    wire packs (``packs/<sha256>.pack`` located through ``packs/<sha256>.idx``)."""
    from coral_git.remote.wirepack import parse_index, read_object

    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/objects/"):
        for item in page.get("Contents", []):
            rest = item["Key"].split("/objects/", 1)[1]
            out[rest.replace("/", "")] = client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{prefix}/packs/"):
        for item in page.get("Contents", []):
            if not item["Key"].endswith(".idx"):
                continue
            index = parse_index(client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read())
            pack = client.get_object(Bucket=BUCKET, Key=item["Key"][:-4] + ".pack")["Body"].read()
            assert hashlib.sha256(pack).hexdigest() == index.pack_oid == item["Key"].rsplit("/", 1)[1][:-4]
            for e in index:
                out[e.cid] = read_object(e, lambda off, n, pack=pack: pack[off : off + n])
    return out


def closure(ids: set[str], objs: dict[str, bytes]) -> set[str]:
    """``ids`` and every delta base they need, as stored on the remote."""
    out: set[str] = set()
    todo = list(ids)
    while todo:
        cid = todo.pop()
        if cid in out:
            continue
        out.add(cid)
        base = unpack_header(cid, objs[cid]).base
        if base:
            todo.append(base)
    return out


def push_versions(repo: Path, tmp_path: Path, prefix: str, n: int) -> tuple[Path, list[str]]:
    """``n`` versions pushed: git objects to a bare repository, chunks to s3://BUCKET/prefix."""
    url = f"s3://{BUCKET}/{prefix}"
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    from coral_git.git.install import CONFIG

    for key, value in {**CONFIG, "coral.chunkSize": "65536"}.items():
        git(tmp_path, "config", "--global", key, value)
    git(repo, "remote", "add", "origin", str(bare))
    coral(repo, "remote", "set", "--shared", "origin", url)  # .coralconfig: clones find the store
    git(repo, "add", ".coralconfig")
    state = make_state(seed=3)
    shas = []
    for v in range(n):
        save_safetensors(repo / "model.safetensors", state)
        shas.append(sha256(repo / "model.safetensors"))
        git(repo, "add", "model.safetensors")
        git(repo, "commit", "-qm", f"v{v}")
        state = perturb(state, seed=v)
    proc = subprocess.run(["git", "push", "-u", "origin", "main"], cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"to remote 'origin' ({url})" in proc.stderr
    return bare, shas


def test_s3_push_clone_and_lazy_checkout_of_an_old_revision(repo: Path, s3, tmp_path: Path) -> None:
    prefix = "lazy"
    bare, shas = push_versions(repo, tmp_path, prefix, 3)
    objs = remote_objects(s3, prefix)
    local = set(LooseObjects(repo / ".git" / "coral" / "objects").ids())
    assert set(objs) == local  # every version pushed, nothing else
    # a fresh clone checks out the latest version, fetching on demand from the store in .coralconfig
    full = tmp_path / "full"
    git(tmp_path, "clone", "-q", str(bare), str(full))
    assert sha256(full / "model.safetensors") == shas[-1]
    # pointers only, then one old revision: only its chunks (and their delta bases) come down
    lazy = tmp_path / "lazy"
    git(tmp_path, "clone", "-q", str(bare), str(lazy), env={"CORAL_SKIP_SMUDGE": "1"})
    store = lazy / ".git" / "coral" / "objects"
    assert LooseObjects(store).ids() == []
    proc = subprocess.run(["git", "checkout", "HEAD~2", "--", "model.safetensors"], cwd=lazy, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sha256(lazy / "model.safetensors") == shas[0]
    old = ptr.parse(git(lazy, "show", "HEAD~2:model.safetensors").encode())
    want = closure(old.chunk_ids(), objs)
    got = set(LooseObjects(store).ids())
    assert got == want
    fetched = sum(len(objs[c]) for c in got)
    assert fetched < sum(len(v) for v in objs.values())
    m = re.search(r"fetched (\d+) object\(s\)", proc.stderr)
    assert m and int(m.group(1)) == len(want)
    assert git(lazy, "status", "--porcelain", "--untracked-files=no").strip() == "M  model.safetensors"


def test_s3_wrong_credentials_no_credentials_and_unreachable(
    repo: Path, s3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import settings

    bare, _ = push_versions(repo, tmp_path, "errors", 1)
    save_safetensors(repo / "model.safetensors", make_state(seed=42))
    git(repo, "commit", "-qam", "v3")
    before = git(bare, "rev-parse", "main")

    def push_error(env: dict[str, str]) -> str:
        proc = subprocess.run(
            ["git", "push", "origin", "main"], cwd=repo, capture_output=True, text=True, env={**os.environ, **env}
        )
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: coral")]
        assert len(lines) == 1, proc.stderr
        assert git(bare, "rev-parse", "main") == before  # the refs did not move
        return lines[0]

    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # moto now checks every request's credentials
    try:
        line = push_error({"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0", "AWS_SECRET_ACCESS_KEY": "nope"})
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
    assert "refused the credentials" in line and "remote 'origin'" in line and "AWS_ACCESS_KEY_ID" in line
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    line = push_error({})
    assert "no AWS credentials" in line and "remote 'origin'" in line
    line = push_error({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"})
    assert "cannot reach remote 'origin'" in line
