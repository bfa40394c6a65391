"""`git add` of a large file shows a transient progress line on a terminal, and nothing otherwise."""

from __future__ import annotations

import os
import pty
import subprocess
from pathlib import Path

from helpers import git, make_state, save_safetensors


def _run_on_a_terminal(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, bytes]:
    """Run ``cmd`` with stdin/stdout/stderr on a pseudo-terminal; return its status and everything it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the command and its children are done
            break
        if not data:
            break
        out += data
    os.close(master)
    return proc.wait(), out


def test_add_shows_progress_on_a_terminal_only(repo: Path) -> None:
    save_safetensors(repo / "model.safetensors", make_state(3, layers=4, width=256))
    env = {**os.environ, "CORAL_PROGRESS_AFTER": "1", "COLUMNS": "120"}
    rc, out = _run_on_a_terminal(["git", "add", "model.safetensors"], repo, env)
    assert rc == 0
    assert b"coral: adding model.safetensors" in out
    git(repo, "reset", "-q")
    quiet = subprocess.run(["git", "add", "model.safetensors"], cwd=repo, env=env, capture_output=True)
    assert quiet.returncode == 0 and b"coral: adding" not in quiet.stderr
    assert git(repo, "show", ":model.safetensors").startswith("coral-pointer 2\n")


def test_coral_diff_and_show_show_a_spinner_on_a_terminal_only(repo: Path) -> None:
    save_safetensors(repo / "model.safetensors", make_state(3, layers=2, width=64))
    git(repo, "add", "model.safetensors")
    git(repo, "commit", "-qm", "v1")
    save_safetensors(repo / "model.safetensors", make_state(4, layers=2, width=64))
    env = {**os.environ, "COLUMNS": "120"}
    rc, out = _run_on_a_terminal(["git", "coral", "diff"], repo, env)
    assert rc == 0 and b"coral: comparing model files" in out and b"layers.0.weight" in out
    rc, out = _run_on_a_terminal(["git", "coral", "show", "HEAD:model.safetensors"], repo, env)
    assert rc == 0 and b"coral: reading" in out
    quiet = subprocess.run(["git", "coral", "diff"], cwd=repo, env=env, capture_output=True)
    assert b"coral: comparing" not in quiet.stderr and b"layers.0.weight" in quiet.stdout
