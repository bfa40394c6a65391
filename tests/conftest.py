"""Fixtures for every test: an isolated git identity and HOME, a fresh coral repository."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import isolated_git, new_repo


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test gets its own HOME and fixed identities."""
    with isolated_git(tmp_path_factory.mktemp("home")):
        yield


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository with ``git coral init`` done and one empty commit."""
    return new_repo(tmp_path / "repo")
