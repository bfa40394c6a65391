"""A clone set up only by ``git coral init --global`` gets coral's hooks from its first filter run
(as git-lfs's filter-process installs its own), so its pushes upload the model's chunks."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import commit_versions, coral, git, make_state, save_safetensors, sha256

from coral_git.git.install import HOOK_MARK, HOOKS
from coral_git.store import packs
from coral_git.store.chunkstore import ChunkStore
from coral_git.store.objects import LooseObjects

FOREIGN = "#!/bin/sh\necho ran >> \"$(git rev-parse --git-dir)/foreign-ran\"\n"


def global_only(tmp: Path) -> Path:
    """``git coral init --global`` (and a small chunk size), then a bare remote holding one commit
    with coral's .gitattributes, made by a repository that ran ``git coral init`` itself."""
    coral(tmp, "init", "--global")
    git(tmp, "config", "--global", "coral.chunkSize", "16384")
    bare = tmp / "shared.git"
    git(tmp, "init", "-q", "--bare", str(bare))
    seed = tmp / "seed"
    seed.mkdir()
    git(seed, "init", "-q")
    coral(seed, "init")
    git(seed, "add", ".gitattributes")
    git(seed, "commit", "-qm", "attributes")
    git(seed, "push", "-q", str(bare), "HEAD:main")
    return bare


def hooks_of(clone: Path) -> dict[str, str]:
    d = clone / ".git" / "hooks"
    return {n: (d / n).read_text() for n in HOOKS if (d / n).exists()}


def test_clone_of_a_global_install_pushes_chunks_and_clones_back(tmp_path: Path) -> None:
    bare = global_only(tmp_path)
    work = tmp_path / "work"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    assert not any(HOOK_MARK in t for t in hooks_of(work).values())  # nothing filtered yet: no hooks
    hooks = work / ".git" / "hooks"
    (hooks / "pre-push").write_text(FOREIGN)  # another tool's hook: kept and chained, never lost
    (hooks / "pre-push").chmod(0o755)
    shas = commit_versions(work, "model.safetensors", make_state(seed=3, width=128), 2)
    installed = hooks_of(work)
    assert sorted(installed) == sorted(HOOKS) and all(HOOK_MARK in t for t in installed.values())
    assert (hooks / "pre-push.pre-coral").read_text() == FOREIGN
    push = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=work, capture_output=True)
    assert push.returncode == 0, push.stderr.decode()
    assert (work / ".git" / "foreign-ran").read_text() == "ran\n"
    # the pre-push hook uploaded every chunk of both versions to the bare repository's store
    ours = set(LooseObjects(work / ".git" / "coral" / "objects").ids())
    remote = ChunkStore(bare / "coral")
    packs.attach(remote)  # a path remote keeps pushed objects in packs
    assert ours and all(remote.has(cid) for cid in ours)
    # a second clone (also without 'git coral init') checks every version out byte-exact
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(bare), str(other))
    assert sha256(other / "model.safetensors") == shas[-1]
    assert all(HOOK_MARK in t for t in hooks_of(other).values()) and len(hooks_of(other)) == len(HOOKS)
    git(other, "checkout", "-q", "HEAD~1")
    assert sha256(other / "model.safetensors") == shas[0]
    # a filter run with the hooks in place changes nothing
    before = {n: (hooks / n).stat().st_mtime_ns for n in HOOKS}
    git(work, "add", "--renormalize", ".")
    assert {n: (hooks / n).stat().st_mtime_ns for n in HOOKS} == before
    # the chained tool writes its hook again over coral's ('git lfs install --force'): the next
    # filter run puts coral's back (the chain already runs that hook); a third hook is left alone
    other = "#!/bin/sh\nexit 0\n"
    (hooks / "pre-push").write_text(FOREIGN)
    git(work, "add", "--renormalize", ".")
    assert HOOK_MARK in (hooks / "pre-push").read_text() and (hooks / "pre-push.pre-coral").read_text() == FOREIGN
    (hooks / "pre-push").write_text(other)
    git(work, "add", "--renormalize", ".")
    assert (hooks / "pre-push").read_text() == other and (hooks / "pre-push.pre-coral").read_text() == FOREIGN


def test_hooks_path_and_opt_out_are_left_alone(tmp_path: Path) -> None:
    bare = global_only(tmp_path)
    shared_hooks = tmp_path / "team-hooks"
    shared_hooks.mkdir()
    for name, cfg in (("a", ["-c", f"core.hooksPath={shared_hooks}"]), ("b", ["-c", "coral.autoHooks=false"])):
        clone = tmp_path / name
        git(tmp_path, "clone", "-q", *cfg, str(bare), str(clone))
        save_safetensors(clone / "model.safetensors", make_state(seed=4, width=64))
        add = subprocess.run(["git", "add", "model.safetensors"], cwd=clone, capture_output=True)
        assert add.returncode == 0
        assert not hooks_of(clone)
        notice = add.stderr.decode()
        if name == "a":
            assert list(shared_hooks.iterdir()) == []
            assert "core.hooksPath is set" in notice and "git coral init" in notice
            again = subprocess.run(["git", "add", "--renormalize", "."], cwd=clone, capture_output=True)
            assert "core.hooksPath" not in again.stderr.decode()  # said once per repository
        else:
            assert notice == ""
