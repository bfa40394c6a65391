"""User-facing errors: non-zero exit, one clear line naming what is wrong, a traceback only with CORAL_DEBUG=1.

Also corruption detection on read: a flipped bit or a truncated object, a pointer edited by hand
(to name a chunk that does not exist, or so it no longer parses) fail the checkout with a line that
names the file, the tensor and the object, and nothing wrong is written to the work tree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import coral, git, save_safetensors


def ours(stderr: bytes, prefix: str = "coral:") -> list[str]:
    """The lines coral printed (git adds its own 'fatal: ...' lines after them)."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    return [ln for ln in text.splitlines() if ln.startswith(prefix)]


@pytest.fixture
def committed(repo: Path) -> tuple[Path, bytes]:
    state = {"w": np.random.default_rng(0).standard_normal((3, 1 << 18)).astype(np.float32), "b": np.ones(10, np.float32)}
    save_safetensors(repo / "m.safetensors", state)
    git(repo, "add", "m.safetensors")
    git(repo, "commit", "-qm", "m")
    return repo, (repo / "m.safetensors").read_bytes()


def chunk_of(repo: Path, tensor: str) -> str:
    for line in git(repo, "cat-file", "-p", "HEAD:m.safetensors").splitlines():
        if line.startswith(f"tensor {tensor} "):
            return line.split()[-1].split(",")[0]
    raise AssertionError(tensor)


def checkout_fails(repo: Path) -> list[str]:
    (repo / "m.safetensors").unlink()
    proc = subprocess.run(["git", "checkout", "--", "m.safetensors"], cwd=repo, capture_output=True)
    assert proc.returncode != 0
    assert not (repo / "m.safetensors").exists(), "a failed smudge must not leave wrong bytes behind"
    lines = ours(proc.stderr)
    assert len(lines) == 1, proc.stderr.decode()
    return lines


def test_init_outside_a_repository(tmp_path: Path) -> None:
    proc = subprocess.run(["git", "coral", "init"], cwd=tmp_path, capture_output=True)
    assert proc.returncode != 0
    assert ours(proc.stderr, "error:") == ["error: not inside a git repository; run this from a repository's work tree"]
    dbg = subprocess.run(["git", "coral", "init"], cwd=tmp_path, capture_output=True, env={**os.environ, "CORAL_DEBUG": "1"})
    assert dbg.returncode != 0 and b"Traceback" in dbg.stderr


def test_bad_config_value(committed: tuple[Path, bytes]) -> None:
    repo, _ = committed
    git(repo, "config", "coral.chunkSize", "abc")
    (repo / "n.safetensors").write_bytes((repo / "m.safetensors").read_bytes() + b"")
    proc = subprocess.run(["git", "add", "n.safetensors"], cwd=repo, capture_output=True)
    assert proc.returncode != 0
    assert ours(proc.stderr) == ["coral: n.safetensors: coral.chunkSize = 'abc' is not a number; fix it with 'git config coral.chunkSize <n>'"]
    git(repo, "config", "coral.chunkSize", "1")
    proc = subprocess.run(["git", "add", "n.safetensors"], cwd=repo, capture_output=True)
    assert proc.returncode != 0 and "out of range" in ours(proc.stderr)[0]


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_damaged_object_on_checkout(committed: tuple[Path, bytes], damage: str) -> None:
    repo, _ = committed
    cid = chunk_of(repo, "w")
    path = repo / ".git" / "coral" / "objects" / cid[:2] / cid[2:]
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10
    else:
        del data[len(data) // 2 :]
    path.write_bytes(bytes(data))
    (line,) = checkout_fails(repo)
    assert cid in line and "m.safetensors" in line and "tensor w" in line and "corrupt" in line, line
    proc = coral(repo, "fsck", check=False)
    assert proc.returncode != 0 and cid in proc.stdout.decode() + proc.stderr.decode()


def _commit_pointer(repo: Path, text: str) -> None:
    oid = git(repo, "hash-object", "-w", "--no-filters", "--stdin", input=text.encode()).strip()
    git(repo, "update-index", "--cacheinfo", f"100644,{oid},m.safetensors")
    git(repo, "commit", "-qm", "hand-edited pointer")


def _resigned(text: str) -> str:
    """Pointer text with its check line recomputed: a well-formed pointer naming what it names."""
    from dataclasses import replace

    from coral_git.core import pointer as ptr

    body = text[: text.rindex("check ")].replace("coral-pointer 2\n", "coral-pointer 1\n", 1)
    return replace(ptr.parse(body.encode()), version=2).render()


def test_pointer_edited_to_a_missing_chunk(committed: tuple[Path, bytes]) -> None:
    repo, _ = committed
    cid = chunk_of(repo, "b")
    bogus = "ffff" + cid[4:] if not cid.startswith("ffff") else "0000" + cid[4:]
    _commit_pointer(repo, _resigned(git(repo, "cat-file", "-p", "HEAD:m.safetensors").replace(cid, bogus)))
    (line,) = checkout_fails(repo)
    assert bogus in line and "missing" in line and "m.safetensors" in line and "tensor b" in line, line


def test_pointer_edited_so_it_does_not_parse(committed: tuple[Path, bytes]) -> None:
    repo, _ = committed
    text = git(repo, "cat-file", "-p", "HEAD:m.safetensors")
    size = text.splitlines()[1].split()[1]
    _commit_pointer(repo, text.replace(f"file {size} ", "file 123 ", 1))
    (line,) = checkout_fails(repo)
    assert "m.safetensors" in line and "pointer is damaged" in line, line


def test_usage_errors_exit_non_zero_without_traceback(repo: Path) -> None:
    for args in (["no-such-command"], ["untrack"], ["--bogus-option"]):  # bare "track" lists patterns (issue 14)
        proc = coral(repo, *args, check=False)
        assert proc.returncode == 2, args
        err = proc.stderr.decode()
        assert "Traceback" not in err and "Error:" in err, err


def test_original_survives_failed_checkouts(committed: tuple[Path, bytes], tmp_path: Path) -> None:
    """After the failures above are repaired, the original bytes come back exactly."""
    repo, original = committed
    cid = chunk_of(repo, "w")
    path = repo / ".git" / "coral" / "objects" / cid[:2] / cid[2:]
    saved = path.read_bytes()
    os.chmod(path, 0o644)
    path.write_bytes(saved[:40])
    checkout_fails(repo)
    path.write_bytes(saved)
    git(repo, "checkout", "--", "m.safetensors")
    assert (repo / "m.safetensors").read_bytes() == original


USER_ERRORS = {
    "CoralError", "UsageError", "NotARepositoryError", "PointerError", "StoreError", "MissingObjectError",
    "CorruptObjectError", "RemoteError", "MergeError", "CheckpointError",
    "LfsError", "LfsAuthError", "LfsUnreachableError", "LfsEndpointError", "LfsIntegrityError",
}  # fmt: skip


def _message_stems(root: Path) -> list[tuple[str, str]]:
    """``(where, longest literal piece)`` of every user-facing error message raised in the package."""
    import ast

    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.func.id not in USER_ERRORS:
                continue
            pos = 1 if node.func.id in ("MissingObjectError", "CorruptObjectError") else 0
            if len(node.args) <= pos:
                continue
            arg = node.args[pos]
            pieces = [arg.value] if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else (
                [v.value for v in arg.values if isinstance(v, ast.Constant)] if isinstance(arg, ast.JoinedStr) else []
            )
            stem = max((p.strip() for p in pieces), key=len, default="")
            if len(stem) >= 8:
                out.append((f"{path.relative_to(root.parent)}:{node.lineno}", stem))
    return out


def test_error_catalogue_is_complete() -> None:
    """docs/errors.md lists every message the package can raise (its literal text)."""
    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "errors.md").read_text()
    stems = _message_stems(root / "coral_git")
    assert len(stems) > 50
    missing = [f"{where}: {stem!r}" for where, stem in stems if stem not in doc]
    assert not missing, "add these messages to docs/errors.md (cause and fix):\n" + "\n".join(missing)
