"""End to end: the merge driver under real git merge, rebase, cherry-pick and revert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from helpers import coral, git, make_state, new_repo, perturb, save_safetensors, sha256
from safetensors.numpy import load_file

F32 = np.float32
MODEL = "model.safetensors"


def commit(repo: Path, state: dict[str, np.ndarray], msg: str, meta: dict[str, str] | None = None, path: str = MODEL) -> None:
    save_safetensors(repo / path, state, meta)
    git(repo, "add", path)
    git(repo, "commit", "-qm", msg)


def diverge(repo: Path, base: dict, ours: dict, theirs: dict, meta=(None, None, None)) -> None:
    """base on main; branch 'feature' gets theirs; main gets ours."""
    commit(repo, base, "base", meta[0])
    git(repo, "checkout", "-qb", "feature")
    commit(repo, theirs, "theirs", meta[2])
    git(repo, "checkout", "-q", "main")
    commit(repo, ours, "ours", meta[1])


def assert_clean_tree(repo: Path) -> None:
    """Nothing modified: the smudged merge result cleans back to the committed pointer."""
    assert git(repo, "status", "--porcelain", "--untracked-files=no") == ""


def small(seed: int = 0) -> dict[str, np.ndarray]:
    s = make_state(seed, layers=3, width=48)
    s["step"] = np.array([7], dtype=np.int64)
    return s


def test_disjoint_fine_tunes_merge_cleanly_and_exactly(repo: Path) -> None:
    base = small()
    ours = perturb(base, 1, keys=lambda k: k.startswith("layers.0"))
    theirs = perturb(base, 2, keys=lambda k: k.startswith("layers.2") or k == "head.weight")
    diverge(repo, base, ours, theirs, ({"epoch": "0"}, {"epoch": "0"}, {"epoch": "0", "by": "feature"}))
    git(repo, "merge", "-q", "feature", "-m", "merge")
    merged = load_file(repo / MODEL)
    for k in base:
        want = ours[k] if k.startswith("layers.0") else theirs[k]
        assert np.array_equal(merged[k], want), k
    assert_clean_tree(repo)
    # the committed pointer reproduces the working file byte for byte on a fresh checkout
    before = sha256(repo / MODEL)
    (repo / MODEL).unlink()
    git(repo, "checkout", "--", MODEL)
    assert sha256(repo / MODEL) == before
    from safetensors import safe_open

    with safe_open(repo / MODEL, "np") as f:
        assert f.metadata() == {"epoch": "0", "by": "feature"}


def test_conflict_keeps_ours_then_resolve_per_tensor_and_commit(repo: Path) -> None:
    base = small()
    ours = perturb(base, 1, keys=lambda k: k in ("layers.1.weight", "head.weight"))
    theirs = perturb(base, 2, keys=lambda k: k in ("layers.1.weight", "head.weight", "layers.2.bias"))
    diverge(repo, base, ours, theirs)
    ours_sha = sha256(repo / MODEL)
    proc = git(repo, "merge", "feature", check=False)
    assert "CONFLICT" in proc or git(repo, "ls-files", "-u")
    assert sha256(repo / MODEL) == ours_sha  # a loadable model, not conflict markers
    assert len(git(repo, "ls-files", "-u", MODEL).splitlines()) == 3
    reports = list((repo / ".git" / "coral" / "merge").glob("*.json"))
    assert len(reports) == 1 and {c["tensor"] for c in json.loads(reports[0].read_text())["conflicts"]} == {"layers.1.weight", "head.weight"}
    out = coral(repo, "conflicts").stdout.decode()
    assert "model.safetensors: 2 conflicts" in out and "layers.1.weight" in out and "head.weight" in out
    # resolve heads with theirs first: not staged yet, one conflict left
    part = coral(repo, "resolve", MODEL, "--theirs", "--tensor", "head.*", check=False)
    assert part.returncode == 1 and b"layers.1.weight" in part.stderr
    assert git(repo, "ls-files", "-u", MODEL)
    bad = coral(repo, "resolve", MODEL, "--ours", "--tensor", "nothing.*", check=False)
    assert bad.returncode != 0 and b"no conflict" in bad.stderr and b"Traceback" not in bad.stderr
    coral(repo, "resolve", MODEL, "--strategy", "average")
    assert git(repo, "ls-files", "-u") == ""
    git(repo, "commit", "-qm", "merged")
    merged = load_file(repo / MODEL)
    assert np.array_equal(merged["head.weight"], theirs["head.weight"])
    assert np.array_equal(merged["layers.1.weight"], F32(0.5) * ours["layers.1.weight"] + F32(0.5) * theirs["layers.1.weight"])
    assert np.array_equal(merged["layers.2.bias"], theirs["layers.2.bias"])
    assert_clean_tree(repo)
    assert not list((repo / ".git" / "coral" / "merge").glob("*.json"))
    assert b"no model conflicts" in coral(repo, "conflicts").stderr


def test_strategy_from_config_attributes_env_and_tensor_rules(repo: Path) -> None:
    base = small()
    ours = perturb(base, 1, keys=lambda k: k in ("layers.0.weight", "head.weight"))
    theirs = perturb(base, 2, keys=lambda k: k in ("layers.0.weight", "head.weight"))
    diverge(repo, base, ours, theirs)
    git(repo, "config", "coral.merge.strategy", "weighted")
    git(repo, "config", "coral.merge.alpha", "0.25")
    git(repo, "config", "--add", "coral.merge.tensorStrategy", "head.*=theirs")
    git(repo, "merge", "-q", "feature", "-m", "merge")
    m = load_file(repo / MODEL)
    assert np.array_equal(m["head.weight"], theirs["head.weight"])
    assert np.array_equal(m["layers.0.weight"], F32(0.25) * ours["layers.0.weight"] + F32(0.75) * theirs["layers.0.weight"])
    assert_clean_tree(repo)
    # gitattributes beat config; the environment beats both, for one merge
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    (repo / ".gitattributes").write_text((repo / ".gitattributes").read_text() + "*.safetensors coral-merge=task-arithmetic:0.5\n")
    git(repo, "merge", "-q", "feature", "-m", "merge")
    m = load_file(repo / MODEL)
    b, o, t = base["layers.0.weight"], ours["layers.0.weight"], theirs["layers.0.weight"]
    assert np.array_equal(m["layers.0.weight"], b + F32(0.5) * ((o - b) + (t - b)))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    git(repo, "merge", "-q", "feature", "-m", "merge", env={"CORAL_MERGE_STRATEGY": "ours"})
    m = load_file(repo / MODEL)
    assert np.array_equal(m["layers.0.weight"], ours["layers.0.weight"])
    assert np.array_equal(m["head.weight"], theirs["head.weight"])  # the tensor rule still applies
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    env = {"CORAL_MERGE_TENSOR_STRATEGY": "head.*=conflict;*=average"}  # env rules come before config rules
    git(repo, "merge", "feature", check=False, env=env)
    out = coral(repo, "conflicts").stdout.decode()
    assert "head.weight" in out and "layers.0.weight" not in out
    git(repo, "merge", "--abort")


def test_rebase_of_three_model_commits_onto_changed_main(repo: Path) -> None:
    base = small()
    commit(repo, base, "base")
    git(repo, "checkout", "-qb", "feature")
    states = []
    s = base
    for i in range(3):  # three training steps touching layers.0 only
        s = perturb(s, 10 + i, keys=lambda k: k.startswith("layers.0"))
        states.append(s)
        commit(repo, s, f"step {i}")
    git(repo, "checkout", "-q", "main")
    main = perturb(base, 3, keys=lambda k: k == "head.weight")
    commit(repo, main, "main changes the head")
    git(repo, "checkout", "-q", "feature")
    git(repo, "rebase", "-q", "main")
    assert len(git(repo, "log", "--oneline", "main..feature").splitlines()) == 3
    for i, rev in enumerate(("feature~2", "feature~1", "feature")):
        git(repo, "checkout", "-q", rev)
        m = load_file(repo / MODEL)
        assert np.array_equal(m["head.weight"], main["head.weight"]), rev
        assert np.array_equal(m["layers.0.weight"], states[i]["layers.0.weight"]), rev
        assert_clean_tree(repo)


def test_cherry_pick_and_revert(repo: Path) -> None:
    base = small()
    commit(repo, base, "base")
    git(repo, "checkout", "-qb", "feature")
    a = perturb(base, 1, keys=lambda k: k == "layers.1.weight")
    commit(repo, a, "fix layers.1")
    git(repo, "checkout", "-q", "main")
    b = perturb(base, 2, keys=lambda k: k == "head.weight")
    commit(repo, b, "tune head")
    git(repo, "cherry-pick", "feature")
    m = load_file(repo / MODEL)
    assert np.array_equal(m["layers.1.weight"], a["layers.1.weight"]) and np.array_equal(m["head.weight"], b["head.weight"])
    git(repo, "revert", "--no-edit", "HEAD~1")  # undo the head tuning, keep the cherry-picked fix
    m = load_file(repo / MODEL)
    assert np.array_equal(m["layers.1.weight"], a["layers.1.weight"]) and np.array_equal(m["head.weight"], base["head.weight"])
    assert_clean_tree(repo)


def test_add_add_without_common_base(repo: Path) -> None:
    git(repo, "checkout", "-qb", "feature")
    theirs = {"shared": np.ones(8, dtype=F32), "only_theirs": np.zeros(3, dtype=F32)}
    commit(repo, theirs, "theirs adds", path="new.safetensors")
    git(repo, "checkout", "-q", "main")
    ours = {"shared": np.full(8, 3, dtype=F32), "only_ours": np.ones(2, dtype=np.int32)}
    commit(repo, ours, "ours adds", path="new.safetensors")
    git(repo, "merge", "feature", check=False)
    assert git(repo, "ls-files", "-u", "new.safetensors")
    assert "added on both sides" in coral(repo, "conflicts").stdout.decode()
    coral(repo, "resolve", "new.safetensors", "-s", "average")
    git(repo, "commit", "-qm", "merged")
    m = load_file(repo / "new.safetensors")
    assert set(m) == {"shared", "only_theirs", "only_ours"} and np.array_equal(m["shared"], np.full(8, 2, dtype=F32))


def test_file_deleted_on_one_side_modified_on_the_other(repo: Path) -> None:
    base = small()
    commit(repo, base, "base")
    git(repo, "checkout", "-qb", "feature")
    theirs = perturb(base, 1)
    commit(repo, theirs, "theirs modifies")
    git(repo, "checkout", "-q", "main")
    git(repo, "rm", "-q", MODEL)
    git(repo, "commit", "-qm", "ours deletes")
    git(repo, "merge", "feature", check=False)
    out = coral(repo, "conflicts").stdout.decode()
    assert "deleted in ours, modified in theirs" in out
    assert np.array_equal(load_file(repo / MODEL)["head.weight"], theirs["head.weight"])  # loadable
    assert coral(repo, "resolve", MODEL, "-s", "average", check=False).returncode != 0
    coral(repo, "resolve", MODEL, "--theirs")
    git(repo, "commit", "-qm", "keep theirs")
    assert np.array_equal(load_file(repo / MODEL)["head.weight"], theirs["head.weight"])
    assert_clean_tree(repo)


def test_tensor_deleted_vs_modified_and_metadata_only_conflict(repo: Path) -> None:
    base = small()
    ours = {k: v for k, v in base.items() if k != "layers.2.weight"}
    theirs = perturb(base, 1, keys=lambda k: k == "layers.2.weight")
    diverge(repo, base, ours, theirs, ({"step": "1"}, {"step": "2"}, {"step": "3"}))
    git(repo, "merge", "feature", check=False)
    out = coral(repo, "conflicts").stdout.decode()
    assert "layers.2.weight" in out and "deleted in ours, modified in theirs" in out and "__metadata__" in out
    coral(repo, "resolve", MODEL, "--tensor", "__metadata__", "--theirs", check=False)
    coral(repo, "resolve", MODEL, "--ours")
    git(repo, "commit", "-qm", "merged")
    from safetensors import safe_open

    with safe_open(repo / MODEL, "np") as f:
        assert f.metadata() == {"step": "3"} and "layers.2.weight" not in f.keys()


def test_metadata_only_change_on_both_sides_conflicts(repo: Path) -> None:
    base = small()
    diverge(repo, base, base, base, ({"step": "1"}, {"step": "2"}, {"step": "3"}))
    git(repo, "merge", "feature", check=False, env={"CORAL_MERGE_STRATEGY": "average"})
    out = coral(repo, "conflicts").stdout.decode()
    assert "__metadata__" in out and "'step'" in out and "model.safetensors: 1 conflict" in out
    git(repo, "merge", "--abort")
    assert_clean_tree(repo)


def test_dtype_changed_on_both_sides_says_why_and_what_applies(tmp_path: Path) -> None:
    """Both branches retyped a tensor differently: the conflict names the dtypes, a numeric strategy
    that cannot apply says so, and the strategies that can are listed."""
    repo = new_repo(tmp_path / "dt")
    base = {"a": np.ones((4, 4), np.float32), "b": np.zeros(3, np.float32)}
    save_safetensors(repo / "x.safetensors", base)
    git(repo, "add", "x.safetensors")
    git(repo, "commit", "-qm", "base")
    git(repo, "checkout", "-qb", "other")
    save_safetensors(repo / "x.safetensors", {**base, "a": np.ones((4, 4), np.float16)})
    git(repo, "commit", "-qam", "f16")
    git(repo, "checkout", "-q", "main")
    save_safetensors(repo / "x.safetensors", {**base, "a": np.full((4, 4), 2, np.float64)})
    git(repo, "commit", "-qam", "f64")
    git(repo, "merge", "other", check=False)
    listing = coral(repo, "conflicts").stdout.decode()
    assert "dtype F64 (ours) vs F16 (theirs)" in listing and "only --ours or --theirs apply" in listing
    res = coral(repo, "resolve", "x.safetensors", "--strategy", "average", check=False)
    err = res.stderr.decode()
    assert res.returncode == 1 and "average cannot combine them" in err and "F16" in err
    coral(repo, "resolve", "x.safetensors", "--theirs")
    git(repo, "commit", "-qm", "merged")
