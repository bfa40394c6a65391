"""git coral migrate import/export against real git-lfs: LFS history -> coral -> LFS, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import coral, git, isolated_git, make_state, perturb, save_safetensors


def need_git_lfs() -> None:
    if shutil.which("git-lfs") is None:
        pytest.fail("git-lfs is not installed: these tests need the real binary (apt-get install git-lfs)")


def _dir_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def lfs_history(path: Path) -> dict[str, dict[str, str]]:
    """5 LFS-tracked checkpoint versions on two branches (and a merge) plus a non-model LFS file; returns
    {commit: {path: sha256}} for every commit."""
    need_git_lfs()
    path.mkdir()
    git(path, "init", "-q")
    git(path, "lfs", "install", "--local")
    git(path, "lfs", "track", "*.safetensors", "*.parquet")
    (path / "data").mkdir()
    (path / "data" / "tokens.parquet").write_bytes(os.urandom(20000))
    (path / "README.md").write_text("a model\n")
    state = make_state(0, layers=3, width=128)
    save_safetensors(path / "model.safetensors", state)
    git(path, "add", ".")
    git(path, "commit", "-qm", "epoch 0")
    for e in (1, 2):
        state = perturb(state, e)
        save_safetensors(path / "model.safetensors", state)
        git(path, "commit", "-qam", f"epoch {e}")
    git(path, "tag", "-a", "v1", "-m", "release 1")
    git(path, "checkout", "-qb", "finetune", "HEAD~1")
    ft = state
    for e in (3, 4):
        ft = perturb(ft, 10 + e, keys=lambda k: k.startswith("head"))
        save_safetensors(path / "model.safetensors", ft)
        (path / "data" / "tokens.parquet").write_bytes(os.urandom(20000))
        git(path, "commit", "-qam", f"finetune {e}")
    git(path, "checkout", "-q", "main")
    git(path, "merge", "-q", "-s", "ours", "--no-edit", "finetune")  # a merge commit (two parents) to map
    out: dict[str, dict[str, str]] = {}
    for c in git(path, "rev-list", "--all").split():
        git(path, "checkout", "-q", c)
        out[c] = {p: hashlib.sha256((path / p).read_bytes()).hexdigest() for p in ("model.safetensors", "data/tokens.parquet")}
    git(path, "checkout", "-q", "main")
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("lfs")
    (base / "home").mkdir()
    with isolated_git(base / "home"):
        repo = base / "repo"
        contents = lfs_history(repo)
        yield repo, contents


@pytest.fixture
def lfsrepo(template, tmp_path: Path):
    src, contents = template
    need_git_lfs()
    dest = tmp_path / "repo"
    shutil.copytree(src, dest, symlinks=True)
    git(dest, "lfs", "install", "--local")
    return dest, contents


def tree_blobs(repo: Path, rev: str) -> dict[str, str]:
    out = {}
    for line in git(repo, "ls-tree", "-r", rev).splitlines():
        meta, path = line.split("\t", 1)
        out[path] = meta.split()[2]
    return out


def test_dry_run_reports_and_changes_nothing(lfsrepo) -> None:
    repo, _ = lfsrepo
    refs = git(repo, "for-each-ref")
    rep = json.loads(coral(repo, "migrate", "import", "--everything", "--dry-run", "--json").stdout)
    assert rep["dry_run"] is True
    assert rep["lfs_files"] == 5 and rep["files"] == 5
    assert 0 < rep["store_bytes"] < rep["lfs_bytes"]
    assert git(repo, "for-each-ref") == refs
    assert not (repo / ".git" / "coral" / "objects").exists() or not any((repo / ".git" / "coral" / "objects").rglob("*"))


def test_import_every_revision_byte_exact_then_export_round_trip(lfsrepo) -> None:
    repo, contents = lfsrepo
    before_refs = dict(line.split()[::-1] for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines())
    before_trees = {ref: tree_blobs(repo, ref) for ref in before_refs}
    before_attrs = {ref: git(repo, "show", f"{ref}:.gitattributes") for ref in before_refs}

    proc = coral(repo, "migrate", "import", "--everything", "--json")
    rep = json.loads(proc.stdout)
    assert rep["lfs_files"] == 5
    cmap = rep["commit_map"]
    assert set(cmap) == set(contents)  # every commit holds a model file: all rewritten
    assert set(rep["refs"]) == {"refs/heads/main", "refs/heads/finetune", "refs/tags/v1"}
    assert git(repo, "cat-file", "-t", "v1") == "tag\n"
    assert git(repo, "rev-parse", "v1^{commit}").strip() == cmap[git(repo, "rev-parse", before_refs["refs/tags/v1"] + "^{commit}").strip()]
    # the store holds less than the LFS objects
    assert _dir_bytes(repo / ".git" / "coral" / "objects") < _dir_bytes(repo / ".git" / "lfs" / "objects")
    # attributes: the model pattern is coral, the excluded (non-model) one still LFS
    attrs = git(repo, "show", "main:.gitattributes")
    assert "*.safetensors filter=coral" in attrs and "*.parquet filter=lfs" in attrs and "safetensors filter=lfs" not in attrs
    # git lfs ls-files: the model is gone from LFS, the parquet file stays
    for rev in ("main", "finetune"):
        listed = git(repo, "lfs", "ls-files", rev)
        assert "model.safetensors" not in listed and "data/tokens.parquet" in listed
    assert git(repo, "status", "--porcelain") == ""
    # every revision checks out byte-exact through coral (and LFS for the parquet file)
    for old, new in cmap.items():
        git(repo, "checkout", "-q", new)
        assert (repo / "model.safetensors").read_bytes()[:14] != b"coral-pointer "
        for p, digest in contents[old].items():
            assert hashlib.sha256((repo / p).read_bytes()).hexdigest() == digest, (old, p)
        assert git(repo, "cat-file", "-p", f"{new}:model.safetensors").startswith("coral-pointer")
    git(repo, "checkout", "-q", "main")

    # a second run changes nothing
    again = json.loads(coral(repo, "migrate", "import", "--everything", "--json").stdout)
    assert again["commit_map"] == {} and again["refs"] == {}

    # export back: the same LFS pointers byte for byte, so the very same commits
    exp = json.loads(coral(repo, "migrate", "export", "--everything", "--to", "lfs", "--json").stdout)
    assert exp["files"] == 5
    for ref, tree in before_trees.items():
        assert tree_blobs(repo, ref) == tree, ref
        assert git(repo, "show", f"{ref}:.gitattributes") == before_attrs[ref]
    after_refs = dict(line.split()[::-1] for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines())
    assert after_refs == before_refs
    assert git(repo, "status", "--porcelain") == ""
    assert "model.safetensors" in git(repo, "lfs", "ls-files", "main")
    # and git-lfs itself can check every model version out from .git/lfs/objects
    shutil.rmtree(repo / ".git" / "coral")
    for old in contents:
        git(repo, "checkout", "-q", old)
        assert hashlib.sha256((repo / "model.safetensors").read_bytes()).hexdigest() == contents[old]["model.safetensors"]


def test_export_plain_and_ranges(lfsrepo) -> None:
    repo, _contents = lfsrepo
    coral(repo, "migrate", "import")  # current branch only
    assert "safetensors filter=coral" not in git(repo, "show", "finetune:.gitattributes")
    assert "safetensors filter=coral" in git(repo, "show", "main:.gitattributes")
    old_main = git(repo, "rev-parse", "main").strip()
    coral(repo, "migrate", "export", "--to", "plain", "main")
    blob = git(repo, "rev-parse", "main:model.safetensors").strip()
    size = int(git(repo, "cat-file", "-s", blob))
    assert size > 100_000  # the file itself, not a pointer
    assert "filter=coral" not in git(repo, "show", "main:.gitattributes")
    assert git(repo, "rev-parse", "main").strip() != old_main
    git(repo, "checkout", "-q", "main")
    assert git(repo, "status", "--porcelain") == ""


def test_refuses_dirty_tree_and_explicit_exclude(lfsrepo) -> None:
    repo, _contents = lfsrepo
    (repo / "README.md").write_text("changed\n")
    proc = coral(repo, "migrate", "import", check=False)
    assert proc.returncode != 0 and "uncommitted changes" in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    git(repo, "checkout", "--", "README.md")
    # include everything LFS holds but exclude the data file: it stays LFS, with a line that wins
    coral(repo, "migrate", "import", "--everything", "-I", "*.safetensors", "-I", "*.parquet", "-X", "data/*")
    attrs = git(repo, "show", "finetune:.gitattributes")
    assert attrs.rstrip().splitlines()[-1] == "data/* filter=lfs diff=lfs merge=lfs -text"
    assert "data/tokens.parquet" in git(repo, "lfs", "ls-files", "finetune")
    git(repo, "checkout", "-q", "finetune")
    assert git(repo, "status", "--porcelain") == ""


def test_missing_lfs_object_stops_before_any_ref_moves(lfsrepo) -> None:
    repo, _ = lfsrepo
    refs = git(repo, "for-each-ref")
    objs = sorted((repo / ".git" / "lfs" / "objects").rglob("*"))
    victim = next(f for f in objs if f.is_file() and f.stat().st_size > 100_000)
    victim.unlink()
    proc = coral(repo, "migrate", "import", "--everything", check=False)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert "git lfs fetch --all" in err and victim.name[:12] in err
    assert git(repo, "for-each-ref") == refs
    assert git(repo, "status", "--porcelain") == ""


def test_init_after_import_keeps_lfs_patterns_lfs(lfsrepo) -> None:
    repo, _ = lfsrepo
    coral(repo, "migrate", "import", "--everything", "-I", "*.safetensors")
    err = coral(repo, "init").stderr.decode()
    assert "migrate import" not in err  # migrated already: a normal init
    lines = (repo / ".gitattributes").read_text().splitlines()
    assert [ln for ln in lines if ln.startswith("*.parquet")] == ["*.parquet filter=lfs diff=lfs merge=lfs -text"]
    assert [ln for ln in lines if ln.startswith("*.safetensors")] == ["*.safetensors filter=coral diff=coral merge=coral -text"]
    assert git(repo, "check-attr", "filter", "data/tokens.parquet").strip().endswith("lfs")


def test_objects_not_local_are_downloaded_through_git_lfs(template, tmp_path: Path) -> None:
    """A clone that never fetched LFS objects: migrate gets them through git-lfs (file:// remote)."""
    src, contents = template
    need_git_lfs()
    bare = tmp_path / "hub.git"
    git(tmp_path, "clone", "-q", "--bare", str(src), str(bare))
    # the bare copy needs the LFS objects too: git-lfs's standalone file transfer reads them there
    shutil.copytree(src / ".git" / "lfs", bare / "lfs")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-checkout", bare.as_uri(), str(clone))
    git(clone, "lfs", "install", "--local")
    git(clone, "checkout", "-q", "main", env={"GIT_LFS_SKIP_SMUDGE": "1"})
    shutil.rmtree(clone / ".git" / "lfs", ignore_errors=True)
    assert (clone / "model.safetensors").read_bytes().startswith(b"version https://git-lfs")
    rep = json.loads(coral(clone, "migrate", "import", "--json").stdout)
    assert rep["lfs_files"] == 5  # main merged finetune: all five versions
    assert len([f for f in (clone / ".git" / "lfs" / "objects").rglob("*") if f.is_file()]) >= 5  # downloaded
    main = git(clone, "rev-parse", "main").strip()
    old = {v: k for k, v in rep["commit_map"].items()}[main]
    assert hashlib.sha256((clone / "model.safetensors").read_bytes()).hexdigest() == contents[old]["model.safetensors"]
