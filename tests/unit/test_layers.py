"""The layer rules of docs/design.md, checked by import-linter (contracts in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    """No upward import between layers, no import between siblings, no cycle anywhere in coral_git."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


def test_top_level_holds_only_the_agreed_modules() -> None:
    """Top of coral_git/: __init__, cli, errors, dtypes, ui and folders (docs/design.md)."""
    top = sorted(p.name for p in (ROOT / "coral_git").glob("*.py"))
    assert top == ["__init__.py", "cli.py", "dtypes.py", "errors.py", "ui.py"]
