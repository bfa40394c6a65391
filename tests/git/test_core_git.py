"""End-to-end: the filter through the real git binary, bytes compared by sha256 after every checkout."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, make_state, perturb, save_safetensors, sha256

from coral_git.core import pointer as ptr


def commit_versions(repo: Path, name: str, n: int, seed: int = 0, **kw) -> list[tuple[str, str]]:
    """Commit ``n`` versions of a model at ``name``; return (commit, sha256) per version."""
    state = make_state(seed, **kw)
    out = []
    for i in range(n):
        save_safetensors(repo / name, state, {"epoch": str(i)})
        git(repo, "add", name)
        git(repo, "commit", "-qm", f"{name} v{i}")
        out.append((git(repo, "rev-parse", "HEAD").strip(), sha256(repo / name)))
        state = perturb(state, seed * 100 + i)
    return out


def assert_clean(repo: Path) -> None:
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def test_init_is_idempotent_and_configures_git(repo: Path) -> None:
    coral(repo, "init")
    attrs = (repo / ".gitattributes").read_text().splitlines()
    assert len([a for a in attrs if a.startswith("*.safetensors")]) == 1
    for pat in ("*.safetensors", "*.pt", "*.pth", "*.bin", "*.ckpt"):
        assert f"{pat} filter=coral diff=coral merge=coral -text" in attrs
    assert git(repo, "config", "filter.coral.process").strip() == "git-coral filter-process"
    assert git(repo, "config", "filter.coral.required").strip() == "true"
    assert git(repo, "config", "filter.coral.clean").strip() == "git-coral clean %f"


def test_help_works_through_git(repo: Path) -> None:
    out = coral(repo, "-h").stdout.decode()
    assert "init" in out and "track" in out


def test_versions_check_out_byte_exact_and_status_stays_clean(repo: Path) -> None:
    versions = commit_versions(repo, "model.safetensors", 4)
    blob = git(repo, "cat-file", "-p", "HEAD:model.safetensors").encode()
    assert ptr.parse(blob).format == "safetensors"
    for commit, digest in versions:
        git(repo, "checkout", "-q", commit)
        assert sha256(repo / "model.safetensors") == digest
        assert_clean(repo)
    git(repo, "checkout", "-q", "main")
    (repo / "model.safetensors").unlink()
    git(repo, "checkout", "--", "model.safetensors")
    assert sha256(repo / "model.safetensors") == versions[-1][1]
    # touching forces git to re-run clean; the pointer must come out identical
    (repo / "model.safetensors").touch()
    assert_clean(repo)


def test_older_versions_become_deltas_and_the_store_stays_small(repo: Path) -> None:
    commit_versions(repo, "model.safetensors", 4, layers=2, width=512)
    raw = (repo / "model.safetensors").stat().st_size * 4
    stored = sum(f.stat().st_size for f in (repo / ".git" / "coral" / "objects").rglob("*") if f.is_file())
    assert stored < raw * 0.8


def test_same_file_gives_the_same_pointer_in_two_repositories(repo: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    coral(other, "init")
    # other has unrelated history first, so its store (and delta bases) differ
    commit_versions(other, "model.safetensors", 2, seed=5)
    commit_versions(repo, "model.safetensors", 1, seed=7)
    shutil.copy(repo / "model.safetensors", other / "model.safetensors")
    git(other, "add", "model.safetensors")
    a = git(repo, "rev-parse", "HEAD:model.safetensors")
    b = git(other, "rev-parse", ":model.safetensors")
    assert a == b


def test_stash_worktree_rebase_cherry_pick_reset(repo: Path, tmp_path: Path) -> None:
    versions = commit_versions(repo, "model.safetensors", 2)
    # stash a modified model and bring it back
    save_safetensors(repo / "model.safetensors", perturb(make_state(0), 99))
    modified = sha256(repo / "model.safetensors")
    git(repo, "stash", "-q")
    assert sha256(repo / "model.safetensors") == versions[-1][1]
    git(repo, "stash", "pop", "-q")
    assert sha256(repo / "model.safetensors") == modified
    git(repo, "checkout", "-q", "--", "model.safetensors")
    # a linked worktree on an older commit shares the store
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", str(wt), versions[0][0])
    assert sha256(wt / "model.safetensors") == versions[0][1]
    assert not (wt / ".git").is_dir()
    # a branch with another model, rebased onto new main work, then cherry-picked
    git(repo, "checkout", "-q", "-b", "side", versions[0][0])
    save_safetensors(repo / "other.safetensors", make_state(3, layers=2))
    side_digest = sha256(repo / "other.safetensors")
    git(repo, "add", "other.safetensors")
    git(repo, "commit", "-qm", "side model")
    git(repo, "rebase", "-q", "main")
    assert sha256(repo / "other.safetensors") == side_digest
    assert sha256(repo / "model.safetensors") == versions[-1][1]
    side = git(repo, "rev-parse", "HEAD").strip()
    git(repo, "checkout", "-q", "main")
    git(repo, "reset", "-q", "--hard", versions[0][0])
    assert sha256(repo / "model.safetensors") == versions[0][1]
    git(repo, "cherry-pick", side)
    assert sha256(repo / "other.safetensors") == side_digest
    assert_clean(repo)


def test_rename_several_files_delete_and_readd(repo: Path) -> None:
    save_safetensors(repo / "a.safetensors", make_state(1))
    save_safetensors(repo / "b.safetensors", make_state(2))
    (repo / "c.bin").write_bytes(np.random.default_rng(3).bytes(300_000))
    digests = {p: sha256(repo / p) for p in ("a.safetensors", "b.safetensors", "c.bin")}
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "three models")
    git(repo, "mv", "a.safetensors", "renamed.safetensors")
    git(repo, "commit", "-qm", "rename")
    git(repo, "rm", "-q", "b.safetensors")
    git(repo, "commit", "-qm", "delete")
    git(repo, "checkout", "HEAD~2", "--", "b.safetensors")
    git(repo, "commit", "-qm", "re-add")
    shutil.rmtree(repo / "sub", ignore_errors=True)
    for p in ("renamed.safetensors", "b.safetensors", "c.bin"):
        (repo / p).unlink()
    git(repo, "checkout", "--", ".")
    assert sha256(repo / "renamed.safetensors") == digests["a.safetensors"]
    assert sha256(repo / "b.safetensors") == digests["b.safetensors"]
    assert sha256(repo / "c.bin") == digests["c.bin"]
    assert_clean(repo)


def test_clone_of_the_repository_with_its_store(repo: Path, tmp_path: Path) -> None:
    versions = commit_versions(repo, "model.safetensors", 2)
    # without a remote chunk store a clone can still check out when it shares the store path:
    # here we copy the store across, which is what 'git coral fetch' automates
    dest = tmp_path / "clone"
    env = {"CORAL_SKIP_SMUDGE": "1"}
    git(tmp_path, "clone", "-q", "--no-checkout", str(repo), str(dest), env=env)
    coral(dest, "init", "--global")
    shutil.copytree(repo / ".git" / "coral" / "objects", dest / ".git" / "coral" / "objects")
    git(dest, "checkout", "-q", "main")
    assert sha256(dest / "model.safetensors") == versions[-1][1]


def test_torch_files_round_trip(repo: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    opt = torch.optim.Adam(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 32)).sum().backward()
        opt.step()
    base = torch.arange(100.0)
    torch.save(model.state_dict(), repo / "sd.pt")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, repo / "full.ckpt")
    torch.save({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}, repo / "bf16.pth")
    torch.save({k: v.half() for k, v in model.state_dict().items()}, repo / "fp16.bin")
    torch.save({"all": base, "view": base[10:20], "col": base.view(10, 10)[:, 2]}, repo / "views.pt")
    from safetensors.torch import save_file

    save_file(model.state_dict(), str(repo / "torchwriter.safetensors"), metadata={"framework": "pt"})
    names = ["sd.pt", "full.ckpt", "bf16.pth", "fp16.bin", "views.pt", "torchwriter.safetensors"]
    digests = {n: sha256(repo / n) for n in names}
    git(repo, "add", *names)
    git(repo, "commit", "-qm", "torch files")
    for n in names:
        blob = git(repo, "cat-file", "-p", f"HEAD:{n}").encode()
        assert ptr.looks_like_pointer(blob)
        (repo / n).unlink()
    git(repo, "checkout", "--", ".")
    for n in names:
        assert sha256(repo / n) == digests[n], n
    loaded = torch.load(repo / "views.pt", weights_only=True)
    assert torch.equal(loaded["view"], base[10:20])
    assert_clean(repo)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a model at all",
        (2**60).to_bytes(8, "little") + b"{}",  # header length beyond the file
        (30).to_bytes(8, "little") + b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}',  # truncated
        (58).to_bytes(8, "little")
        + b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
        + bytes(12),  # overlapping offsets
        b"PK\x03\x04" + bytes(100),  # truncated zip
        b"\x80\x02}q\x00." * 50,  # a legacy pickle
        b"coral-pointer\nfile broken\n",  # close to a pointer, but no version: stored as content
    ],
)
def test_malformed_files_are_stored_exactly(repo: Path, content: bytes) -> None:
    (repo / "weird.pt").write_bytes(content)
    git(repo, "add", "weird.pt")
    git(repo, "commit", "-qm", "weird")
    (repo / "weird.pt").unlink()
    git(repo, "checkout", "--", "weird.pt")
    assert (repo / "weird.pt").read_bytes() == content
    assert_clean(repo)


def test_hostile_pickle_in_a_zip_is_not_executed(repo: Path, tmp_path: Path) -> None:
    import pickle
    import zipfile

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = repo / "evil.pt"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
        z.writestr("archive/data/0", bytes(64))
        z.writestr("archive/version", "3\n")
    digest = sha256(path)
    git(repo, "add", "evil.pt")
    git(repo, "commit", "-qm", "evil")
    path.unlink()
    git(repo, "checkout", "--", "evil.pt")
    assert sha256(path) == digest
    assert not marker.exists()


def test_single_file_clean_and_smudge_commands(repo: Path) -> None:
    save_safetensors(repo / "m.safetensors", make_state(4))
    data = (repo / "m.safetensors").read_bytes()
    pointer = coral(repo, "clean", "m.safetensors", input=data).stdout
    assert ptr.parse(pointer).size == len(data)
    assert coral(repo, "clean", "m.safetensors", input=pointer).stdout == pointer
    assert coral(repo, "smudge", "m.safetensors", input=pointer).stdout == data


def test_missing_chunk_fails_checkout_with_a_clear_message(repo: Path) -> None:
    save_safetensors(repo / "m.safetensors", make_state(4))
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "m")
    shutil.rmtree(repo / ".git" / "coral" / "objects")
    (repo / "m.safetensors").unlink()
    proc = subprocess.run(["git", "checkout", "--", "m.safetensors"], cwd=repo, capture_output=True)
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "m.safetensors" in err and "missing" in err and "Traceback" not in err
    assert not (repo / "m.safetensors").exists()


def test_track_untrack_and_chained_hooks(repo: Path) -> None:
    coral(repo, "track", "*.onnx")
    assert "*.onnx filter=coral" in (repo / ".gitattributes").read_text()
    coral(repo, "untrack", "*.onnx")
    assert "*.onnx" not in (repo / ".gitattributes").read_text().split()  # *.onnx.data stays tracked
    hooks = repo / ".git" / "hooks"
    (hooks / "pre-push").write_text("#!/bin/sh\necho theirs-ran >> \"$(dirname \"$0\")/ran.log\"\n")
    (hooks / "pre-push").chmod(0o755)
    coral(repo, "init")
    coral(repo, "init")  # twice: the user's hook is kept once, never overwritten
    assert "theirs-ran" in (hooks / "pre-push.pre-coral").read_text()
    assert "coral-git hook" in (hooks / "pre-push").read_text()
    subprocess.run([str(hooks / "pre-push"), "origin", "/nowhere"], input=b"", cwd=repo, check=True)
    assert (hooks / "ran.log").read_text().strip() == "theirs-ran"


def test_errors_are_one_line_outside_a_repository(tmp_path: Path) -> None:
    proc = subprocess.run(["git", "coral", "track", "*.x"], cwd=tmp_path, capture_output=True)
    assert proc.returncode != 0
    err = proc.stderr.decode().strip()
    assert "not inside a git repository" in err and "Traceback" not in err and len(err.splitlines()) == 1
