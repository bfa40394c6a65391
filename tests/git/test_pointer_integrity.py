"""A pointer is all-or-nothing: git's partial (-p) machinery can neither split nor mix one, a damaged
pointer is recognised at once (check line, pointer version 2) and refused by clean and smudge, and a
repository committed with version 1 pointers keeps them."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import coral, git, make_state, new_repo, perturb, save_safetensors

from coral_git.core import pointer as ptr
from coral_git.errors import PointerError

MODEL = "model.safetensors"


@pytest.fixture
def two_versions(tmp_path: Path) -> tuple[Path, bytes, bytes]:
    """A repo with v1 committed and v2 (two of nine tensors changed) in the work tree."""
    repo = new_repo(tmp_path / "repo")
    s1 = make_state(1, layers=4, width=64)
    save_safetensors(repo / MODEL, s1)
    v1 = (repo / MODEL).read_bytes()
    git(repo, "add", MODEL)
    git(repo, "commit", "-qm", "v1")
    save_safetensors(repo / MODEL, perturb(s1, 2, keys=lambda k: k in ("layers.0.weight", "head.weight")))
    return repo, v1, (repo / MODEL).read_bytes()


def _answer(repo: Path, answers: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, input=answers.encode(), capture_output=True)


def _staged_pointer(repo: Path) -> bytes:
    return subprocess.run(["git", "show", f":{MODEL}"], cwd=repo, capture_output=True, check=True).stdout


@pytest.mark.parametrize("cmd", [("restore", "-p", MODEL), ("checkout", "-p", "--", MODEL)])
def test_partial_restore_never_empties_the_model(two_versions, cmd) -> None:
    repo, _v1, v2 = two_versions
    _answer(repo, "s\ny\nn\ny\nn\n", *cmd)
    assert (repo / MODEL).read_bytes() == v2  # the uncommitted version is untouched, never empty


def test_partial_add_never_stages_a_mixed_pointer(two_versions) -> None:
    repo, _v1, _v2 = two_versions
    head = subprocess.run(["git", "show", f"HEAD:{MODEL}"], cwd=repo, capture_output=True, check=True).stdout
    _answer(repo, "s\ny\nn\ny\nn\n", "add", "-p", MODEL)
    staged = _staged_pointer(repo)
    assert staged == head  # taken whole or not at all: here not at all
    ptr.parse(staged)
    git(repo, "add", MODEL)  # the whole file can still be staged
    assert ptr.parse(_staged_pointer(repo)) != ptr.parse(head)


@pytest.mark.parametrize("cmd", [("stash", "-p"), ("commit", "-p", "-m", "part")])
def test_partial_stash_and_commit_take_the_file_whole_or_not_at_all(two_versions, cmd) -> None:
    repo, v1, v2 = two_versions
    _answer(repo, "s\ny\nn\ny\nn\n", *cmd)
    assert (repo / MODEL).read_bytes() in (v1, v2)
    for rev in ("HEAD", "stash@{0}"):
        blob = subprocess.run(["git", "show", f"{rev}:{MODEL}"], cwd=repo, capture_output=True).stdout
        if blob:
            ptr.parse(blob)


def test_partial_reset_takes_the_file_whole(two_versions) -> None:
    repo, _v1, _v2 = two_versions
    git(repo, "add", MODEL)
    staged = _staged_pointer(repo)
    _answer(repo, "s\ny\nn\n", "reset", "-p")
    assert _staged_pointer(repo) in (staged, git(repo, "show", f"HEAD:{MODEL}").encode())
    ptr.parse(_staged_pointer(repo))


def _mixed(a: bytes, b: bytes) -> bytes:
    """Lines of ``b`` where they differ, except the last differing line taken from ``a``."""
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    diff = [i for i, (x, y) in enumerate(zip(la, lb, strict=True)) if x != y]
    out = list(lb)
    out[diff[0]] = la[diff[0]]
    return b"".join(out)


def test_parser_names_a_mixed_or_truncated_pointer(two_versions) -> None:
    repo, _v1, _v2 = two_versions
    git(repo, "add", MODEL)
    a = git(repo, "show", f"HEAD:{MODEL}").encode()
    b = _staged_pointer(repo)
    for bad in (_mixed(a, b), b[: b.rindex(b"\ncheck ") + 1], b.replace(b"F32", b"F16", 1)):
        with pytest.raises(PointerError, match="edited, truncated or assembled from two versions"):
            ptr.parse(bad)


def test_version_1_pointers_stay_readable_and_unchanged(repo: Path) -> None:
    """A file committed with a v1 pointer checks out, and re-cleaning it keeps the v1 pointer."""
    save_safetensors(repo / MODEL, make_state(3, layers=2, width=32))
    data = (repo / MODEL).read_bytes()
    git(repo, "add", MODEL)
    v2 = ptr.parse(_staged_pointer(repo))
    assert v2.version == 2
    v1_text = replace(v2, version=1).encode()
    assert ptr.parse(v1_text).version == 1 and b"\ncheck " not in v1_text
    oid = git(repo, "hash-object", "-w", "--stdin", "--no-filters", input=v1_text).strip()
    git(repo, "update-index", "--cacheinfo", f"100644,{oid},{MODEL}")
    git(repo, "commit", "-qm", "committed by coral-git 0.1 (v1 pointer)")
    (repo / MODEL).unlink()
    git(repo, "checkout", "--", MODEL)
    assert (repo / MODEL).read_bytes() == data
    (repo / MODEL).touch()
    git(repo, "add", MODEL)  # re-clean: same bytes, so the staged v1 pointer is kept
    assert _staged_pointer(repo) == v1_text
    assert git(repo, "status", "--porcelain") == ""


def test_clean_refuses_a_damaged_pointer(two_versions) -> None:
    repo, _v1, _v2 = two_versions
    git(repo, "add", MODEL)
    b = _staged_pointer(repo)
    (repo / MODEL).write_bytes(_mixed(git(repo, "show", f"HEAD:{MODEL}").encode(), b))
    proc = subprocess.run(["git", "add", MODEL], cwd=repo, capture_output=True, text=True)
    assert proc.returncode != 0
    assert "damaged coral pointer" in proc.stderr and "git checkout <rev> -- <path>" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _staged_pointer(repo) == b  # nothing of the damaged text reached the index


def test_smudge_refuses_a_mixed_pointer_and_says_so(two_versions) -> None:
    repo, v1, _v2 = two_versions
    git(repo, "add", MODEL)
    mixed = _mixed(git(repo, "show", f"HEAD:{MODEL}").encode(), _staged_pointer(repo))
    oid = git(repo, "hash-object", "-w", "--stdin", "--no-filters", input=mixed).strip()
    git(repo, "update-index", "--cacheinfo", f"100644,{oid},{MODEL}")
    proc = subprocess.run(["git", "checkout", "--", MODEL], cwd=repo, capture_output=True, text=True)
    assert proc.returncode != 0
    assert re.search(r"assembled from two versions.*git checkout <good-rev> -- model.safetensors", proc.stderr)
    # git removes the file before it runs the filter; what it must never do is write a mixed model
    assert not (repo / MODEL).exists() or (repo / MODEL).read_bytes() != v1
    res = coral(repo, "fsck", check=False)
    assert res.returncode != 0


def test_any_subset_of_pointer_hunks_takes_the_whole_file_or_none(tmp_path: Path) -> None:
    """Property: hunks of the pointer diff applied with ``git apply --cached`` (forced to text) either
    give a committed version back on checkout or fail with the pointer named; never other bytes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    repo = new_repo(tmp_path / "prop")
    base = make_state(5, layers=6, width=32)
    versions: list[bytes] = []
    for i in range(3):
        save_safetensors(repo / MODEL, perturb(base, 10 + i, keys=lambda k, i=i: k.startswith(f"layers.{i}") or k == "head.weight"))
        versions.append((repo / MODEL).read_bytes())
        git(repo, "add", MODEL)
        git(repo, "commit", "-qm", f"v{i}")

    @settings(max_examples=12, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([(0, 2), (2, 0), (1, 2), (0, 1)]), st.lists(st.booleans(), min_size=8, max_size=8))
    def prop(pair: tuple[int, int], keep: list[bool]) -> None:
        a, b = (f"HEAD~{2 - pair[0]}", f"HEAD~{2 - pair[1]}")
        git(repo, "reset", "-q", "--hard")
        git(repo, "read-tree", a)
        patch = git(repo, "diff", "--text", "--no-ext-diff", "--no-textconv", "-U0", a, b, "--", MODEL)
        head, *hunks = re.split(r"(?m)^(?=@@ )", patch)
        chosen = [h for h, k in zip(hunks, keep, strict=False) if k]
        if chosen:
            git(repo, "apply", "--cached", "--unidiff-zero", input=(head + "".join(chosen)).encode(), check=False)
        (repo / MODEL).unlink()
        proc = subprocess.run(["git", "checkout-index", "-f", MODEL], cwd=repo, capture_output=True, text=True)
        if proc.returncode == 0:
            assert (repo / MODEL).read_bytes() in versions
        else:
            assert "pointer" in proc.stderr

    prop()


def test_fsck_full_finds_a_mixed_version_1_pointer_and_names_commit_and_path(two_versions) -> None:
    """A v1 pointer has no check line: mixed from two versions, every chunk exists and sizes agree, so
    only rebuilding the file (``fsck --full``) can tell; the report names the commit and the path."""
    repo, _v1, _v2 = two_versions
    git(repo, "add", MODEL)
    a = replace(ptr.parse(git(repo, "show", f"HEAD:{MODEL}").encode()), version=1).encode()
    b = replace(ptr.parse(_staged_pointer(repo)), version=1).encode()
    oid = git(repo, "hash-object", "-w", "--stdin", "--no-filters", input=_mixed(a, b)).strip()
    git(repo, "update-index", "--cacheinfo", f"100644,{oid},{MODEL}")
    git(repo, "commit", "-qm", "mixed by an old add -p")
    commit = git(repo, "rev-parse", "HEAD").strip()
    assert coral(repo, "fsck").returncode == 0  # objects and pointer sizes are all fine
    res = coral(repo, "fsck", "--full", check=False)
    out = res.stdout.decode()
    assert res.returncode == 1
    assert f"bad-file {oid}" in out and "does not match" in out
    assert re.search(rf"needed by {MODEL} \(file\) at {commit[:12]}", out), out


def test_stats_figures_add_up_and_say_when_chunks_are_missing(two_versions) -> None:
    import json
    import shutil

    repo, _v1, _v2 = two_versions
    git(repo, "commit", "-qam", "v2")
    s = json.loads(coral(repo, "stats", "--json").stdout)
    assert s["compression_saved"] >= -4096 and s["missing_chunks"] == 0
    assert s["logical_bytes"] - s["dedup_saved"] - s["delta_saved"] - s["compression_saved"] + s["base_overhead"] == s["stored_bytes"]
    shutil.rmtree(repo / ".git" / "coral")
    gone = json.loads(coral(repo, "stats", "--json").stdout)
    assert gone["missing_chunks"] == s["chunks"] and gone["ratio"] == 0
    assert gone["missing_bytes"] == s["unique_chunk_bytes"] and gone["dedup_saved"] == s["dedup_saved"]
    text = coral(repo, "stats").stdout.decode()
    assert "ratio:                 unknown" in text and "missing chunks" in text


def test_opaque_files_committed_with_fixed_cuts_keep_their_pointers(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before content-defined chunking opaque files were cut every chunk size; re-cleaning such a file
    unchanged keeps its staged pointer, so an upgrade does not show every opaque file as modified."""
    from coral_git.filter import clean as cleaning
    from coral_git.git.repo import find_repo

    data = bytes(range(256)) * 9000 + b"tail"
    (repo / "blob.bin").write_bytes(data)
    r = find_repo(repo)
    monkeypatch.setattr(cleaning, "opaque_cdc", lambda layout, chunk_bytes: None)  # the old cutter
    fixed = cleaning.clean(data, r.store, chunk_bytes=r.chunk_bytes).pointer
    monkeypatch.undo()
    assert fixed.cdc is None and fixed.format == "opaque"
    oid = git(repo, "hash-object", "-w", "--stdin", "--no-filters", input=fixed.encode()).strip()
    git(repo, "update-index", "--add", "--cacheinfo", f"100644,{oid},blob.bin")
    git(repo, "commit", "-qm", "opaque, fixed cuts")
    (repo / "blob.bin").touch()
    git(repo, "add", "blob.bin")
    assert ptr.parse(git(repo, "show", ":blob.bin").encode()) == fixed
    assert git(repo, "status", "--porcelain") == ""
    (repo / "blob.bin").write_bytes(data + b"!")  # new content gets content-defined cuts
    git(repo, "add", "blob.bin")
    assert ptr.parse(git(repo, "show", ":blob.bin").encode()).cdc is not None
