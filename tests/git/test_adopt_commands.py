"""init in git-lfs repos and fresh clones, track listing, ls-files, status, env, uninstall, push --dry-run,
fetch --exclude/--recent/--all and coral.fetchExclude honoured by smudge — real git, real repos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import coral, git, make_state, new_repo, perturb, save_safetensors


def need_git_lfs() -> None:
    if shutil.which("git-lfs") is None:
        pytest.fail("git-lfs is not installed: this test needs the real binary (apt-get install git-lfs)")


@pytest.fixture
def published(tmp_path: Path):
    """A coral repo with two model files over two commits, pushed (git and chunks) to a bare origin."""
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(origin))
    a = new_repo(tmp_path / "a")
    git(a, "remote", "add", "origin", str(origin))
    s = make_state(1, layers=2, width=64)
    save_safetensors(a / "a.safetensors", s)
    save_safetensors(a / "b.safetensors", make_state(2, layers=2, width=64))
    git(a, "add", ".")
    git(a, "commit", "-qm", "v1")
    save_safetensors(a / "a.safetensors", perturb(s, 1))
    git(a, "commit", "-qam", "v2")
    git(a, "push", "-q", "origin", "main")
    return tmp_path, origin, a


def clone(tmp_path: Path, origin: Path, name: str) -> Path:
    dest = tmp_path / name
    git(tmp_path, "clone", "-q", str(origin), str(dest))  # no coral filter configured yet: pointers
    return dest


def test_init_in_lfs_repo_points_at_migrate(tmp_path: Path) -> None:
    need_git_lfs()
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "lfs", "install", "--local")
    git(repo, "lfs", "track", "*.safetensors")
    before = (repo / ".gitattributes").read_text()
    proc = coral(repo, "init")
    err = proc.stderr.decode()
    assert "git-lfs" in err and "git coral migrate import" in err
    assert (repo / ".gitattributes").read_text() == before  # no second, conflicting filter line
    rows = json.loads(coral(repo, "track", "--json").stdout)
    assert rows == [{"pattern": "*.safetensors", "filter": "lfs", "file": ".gitattributes"}]
    assert "pre-push" not in [p.name for p in (repo / ".git" / "hooks").iterdir() if "coral" in p.read_text(errors="replace")]


def test_track_lists_patterns(repo: Path) -> None:
    out = coral(repo, "track").stdout.decode()
    assert out.splitlines()[0] == "Listing tracked patterns"
    assert "    *.safetensors (.gitattributes)" in out.splitlines()
    coral(repo, "track", "ckpt/**")
    rows = json.loads(coral(repo, "track", "--json").stdout)
    assert {"pattern": "ckpt/**", "filter": "coral", "file": ".gitattributes"} in rows


def test_clone_init_hint_ls_files_fetch_and_smudge_exclude(published) -> None:
    tmp, origin, a = published
    b = clone(tmp, origin, "b")
    assert (b / "a.safetensors").read_bytes().startswith(b"coral-pointer ")
    err = coral(b, "init").stderr.decode()
    assert "2 model file(s) in the work tree are still pointers" in err and "git coral pull" in err
    rows = {r["path"]: r for r in json.loads(coral(b, "ls-files", "--json").stdout)["files"]}
    assert set(rows) == {"a.safetensors", "b.safetensors"}
    assert not rows["a.safetensors"]["present"] and rows["a.safetensors"]["format"] == "safetensors"
    text = coral(b, "ls-files", "--size").stdout.decode().splitlines()
    assert text[0].split()[1] == "-" and text[0].split()[2] == "a.safetensors" and "KiB" in text[0]
    # fetch with --exclude: only a's chunks arrive
    coral(b, "fetch", "--exclude", "b.safetensors")
    rows = {r["path"]: r for r in json.loads(coral(b, "ls-files", "--json").stdout)["files"]}
    assert rows["a.safetensors"]["present"] and not rows["b.safetensors"]["present"]
    long = coral(b, "ls-files", "--long").stdout.decode().splitlines()[0]
    assert long.split()[0] == rows["a.safetensors"]["id"] and long.split()[1] == "*"
    # the previous version of a is not local until fetch --all
    old = {r["path"]: r for r in json.loads(coral(b, "ls-files", "HEAD~1", "--json").stdout)["files"]}
    assert not old["a.safetensors"]["present"]
    coral(b, "fetch", "--all")
    old = {r["path"]: r for r in json.loads(coral(b, "ls-files", "HEAD~1", "--json").stdout)["files"]}
    assert old["a.safetensors"]["present"] and old["b.safetensors"]["present"]

    # coral.fetchExclude in .coralconfig: a fresh checkout leaves b as its pointer, a as the model
    c = clone(tmp, origin, "c")
    coral(c, "init")
    git(c, "config", "--file", ".coralconfig", "coral.fetchExclude", "b.*")
    (c / "a.safetensors").unlink()
    (c / "b.safetensors").unlink()
    git(c, "checkout", "--", "a.safetensors", "b.safetensors")
    assert (c / "a.safetensors").read_bytes() == (a / "a.safetensors").read_bytes()
    assert (c / "b.safetensors").read_bytes().startswith(b"coral-pointer ")
    assert not json.loads(coral(c, "ls-files", "--json").stdout)["files"][1]["present"]


def test_status_and_push_dry_run(published) -> None:
    _, origin, a = published
    st = json.loads(coral(a, "status", "--json").stdout)
    assert st["branch"] == "main" and st["push"]["missing_chunks"] == 0  # the pre-push hook uploaded them
    s = make_state(9, layers=2, width=64)
    save_safetensors(a / "c.safetensors", s)
    git(a, "add", "c.safetensors")
    save_safetensors(a / "a.safetensors", perturb(s, 3))
    st = json.loads(coral(a, "status", "--json").stdout)
    assert st["staged"] == [{"status": "added", "path": "c.safetensors"}]
    assert st["unstaged"] == [{"status": "modified", "path": "a.safetensors"}]
    git(a, "commit", "-qm", "c")
    st = json.loads(coral(a, "status", "--json").stdout)
    assert st["push"]["missing_chunks"] > 0 and st["push"]["files"] == ["c.safetensors"]
    human = coral(a, "status").stdout.decode()
    assert "Chunks to push to origin" in human and "c.safetensors" in human
    def stored() -> list[str]:  # loose objects and packs (pushes write packs)
        return sorted(p.name for d in ("objects", "packs") for p in (origin / "coral" / d).rglob("*") if p.is_file())

    objects = stored()
    assert objects
    plan = json.loads(coral(a, "push", "--dry-run", "--json").stdout)
    assert plan["missing_chunks"] == st["push"]["missing_chunks"] and [f["path"] for f in plan["files"]] == ["c.safetensors"]
    assert stored() == objects  # nothing sent
    coral(a, "push")
    assert json.loads(coral(a, "status", "--json").stdout)["push"]["missing_chunks"] == 0


def test_env_reports_settings_and_sources(published, monkeypatch: pytest.MonkeyPatch) -> None:
    need_git_lfs()
    _, origin, a = published
    git(a, "config", "coral.zstdLevel", "3")
    monkeypatch.setenv("CORAL_WORKERS", "2")
    e = json.loads(coral(a, "env", "--json").stdout)
    assert e["versions"]["coral-git"] and e["versions"]["git-lfs"][0].isdigit()
    assert e["repository"]["store"] == str(a / ".git" / "coral")
    assert e["repository"]["store_objects"] > 0
    assert e["remotes"] == [{"name": "origin", "url": str(origin), "store": e["remotes"][0]["store"]}]
    assert str(origin / "coral") in e["remotes"][0]["store"]
    s = {x["key"]: x for x in e["settings"]}
    assert s["coral.zstdLevel"]["value"] == "3" and s["coral.zstdLevel"]["source"].startswith("git config --local")
    assert s["coral.workers"] == {"key": "coral.workers", "value": "2", "source": "environment CORAL_WORKERS"}
    assert s["coral.chunkSize"]["source"] == "default"
    assert e["installed"]["filter.coral.process"] == "git-coral filter-process"
    assert "coral.zstdLevel=3  (git config --local" in coral(a, "env").stdout.decode()


def test_uninstall_restores_chained_hook(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    hook = repo / ".git" / "hooks" / "pre-push"
    original = "#!/bin/sh\necho theirs\n"
    hook.write_text(original)
    hook.chmod(0o755)
    coral(repo, "init")
    assert "coral-git hook" in hook.read_text()
    err = coral(repo, "uninstall").stderr.decode()
    assert "restored" in err
    assert hook.read_text() == original
    assert git(repo, "config", "--get", "filter.coral.process", check=False) == ""
    assert git(repo, "config", "--get", "merge.coral.driver", check=False) == ""
    # no hook before init: uninstall removes coral's
    repo2 = tmp_path / "r2"
    repo2.mkdir()
    git(repo2, "init", "-q")
    coral(repo2, "init")
    coral(repo2, "uninstall")
    assert not (repo2 / ".git" / "hooks" / "pre-push").exists()
    # --global
    coral(repo2, "init", "--global")
    assert git(repo2, "config", "--global", "--get", "filter.coral.process").strip()
    coral(repo2, "uninstall", "--global")
    assert git(repo2, "config", "--global", "--get", "filter.coral.process", check=False) == ""


def test_uninstall_removes_every_work_trees_clean_cache(tmp_path: Path) -> None:
    """The clean caches (``coral-cleaned``, one per work tree) go with the filter; the store stays."""
    repo = new_repo(tmp_path / "r")
    save_safetensors(repo / "m.safetensors", make_state(3, layers=1, width=32))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "m")
    git(repo, "worktree", "add", "-q", str(tmp_path / "wt"))
    wt = tmp_path / "wt"
    save_safetensors(wt / "m.safetensors", perturb(make_state(3, layers=1, width=32), 1))
    git(wt, "add", "m.safetensors")
    caches = [repo / ".git" / "coral-cleaned", *(repo / ".git" / "worktrees").glob("*/coral-cleaned")]
    assert len(caches) == 2 and all(c.exists() for c in caches)
    err = coral(repo, "uninstall").stderr.decode()
    assert err.count("removed the clean cache") == 2
    assert not any(c.exists() for c in caches)
    assert (repo / ".git" / "coral").is_dir()


def test_committed_fetch_exclude_applies_to_a_fresh_clone(published) -> None:
    tmp, origin, a = published
    git(a, "config", "--file", ".coralconfig", "coral.fetchExclude", "b.safetensors")
    git(a, "add", ".coralconfig")
    git(a, "commit", "-qm", "do not download b by default")
    git(a, "push", "-q", "origin", "main")
    coral(a, "init", "--global")  # filters for every repository of this (test) user: the clone smudges
    d = clone(tmp, origin, "d")
    assert (d / "a.safetensors").read_bytes() == (a / "a.safetensors").read_bytes()
    assert (d / "b.safetensors").read_bytes().startswith(b"coral-pointer ")
    assert git(d, "status", "--porcelain") == ""
    rows = {r["path"]: r for r in json.loads(coral(d, "ls-files", "--json").stdout)["files"]}
    assert rows["a.safetensors"]["present"] and not rows["b.safetensors"]["present"]
    coral(d, "pull")  # honours the setting too
    assert (d / "b.safetensors").read_bytes().startswith(b"coral-pointer ")
    # asked for explicitly, it comes
    coral(d, "fetch", "--include", "b.safetensors")
    assert json.loads(coral(d, "ls-files", "--json").stdout)["files"][1]["present"]
    coral(d, "pull", "-I", "b.safetensors")
    assert (d / "b.safetensors").read_bytes() == (a / "b.safetensors").read_bytes()
    assert git(d, "status", "--porcelain") == ""
