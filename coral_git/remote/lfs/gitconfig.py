"""Reads git configuration through the ``git config`` binary: the one place this package runs git.

It goes through the project's single git wrapper (``git.repo.run_git``). Going
through ``git config`` (not a parser of our own) means includes, ``-c`` overrides, ``GIT_CONFIG_*``
variables and url matching behave exactly as git's own commands see them.
"""

from __future__ import annotations

from pathlib import Path

from ...git.repo import git_value, run_git


class GitConfig:
    """git config of the repository at ``cwd`` (or global/system only when ``cwd`` is None)."""

    def __init__(self, cwd: str | Path | None = None) -> None:
        self.cwd = cwd

    def _run(self, *args: str, file: str | None = None, blob: str | None = None) -> list[str]:
        cmd = ["config"]
        if file:
            cmd += ["--file", file]
        if blob:
            cmd += ["--blob", blob]
        proc = run_git([*cmd, *args], self.cwd)
        if proc.returncode != 0:  # 1: key not set; other codes: no repo, bad file — both mean "no value"
            return []
        return proc.stdout.decode(errors="surrogateescape").splitlines()

    def get(self, key: str) -> str | None:
        """The last value of ``key``, or None."""
        values = self._run("--get-all", key)
        return values[-1] if values else None

    def get_all(self, key: str) -> list[str]:
        return self._run("--get-all", key)

    def get_urlmatch(self, key: str, url: str) -> str | None:
        """``section.<url>.name`` matched against ``url`` the way git's http code does."""
        values = self._run("--get-urlmatch", key, url)
        return values[-1] if values else None

    def get_bool_urlmatch(self, key: str, url: str, default: bool) -> bool:
        values = self._run("--type=bool", "--get-urlmatch", key, url)
        return values[-1] == "true" if values else default

    def get_regexp(self, pattern: str) -> list[tuple[str, str]]:
        """(key, value) pairs whose key matches ``pattern`` (keys come back lower-cased by git)."""
        out = []
        for line in self._run("--get-regexp", pattern):
            key, _, value = line.partition(" ")
            out.append((key, value))
        return out

    def lfsconfig(self, key: str) -> str | None:
        """``key`` from the committed ``.lfsconfig`` (work-tree file first, then HEAD's blob, as git-lfs reads it)."""
        if self.cwd is None:
            return None
        top = git_value(["rev-parse", "--show-toplevel"], self.cwd)
        if top:
            path = Path(top) / ".lfsconfig"
            if path.is_file():
                values = self._run("--get-all", key, file=str(path))
                return values[-1] if values else None
        values = self._run("--get-all", key, blob="HEAD:.lfsconfig")
        return values[-1] if values else None
