"""Reads git configuration through the ``git config`` binary: the one place this package runs git.

It goes through the project's single git wrapper (``git.repo.run_git``). Going
through ``git config`` (not a parser of our own) means includes, ``-c`` overrides, ``GIT_CONFIG_*``
variables and url matching behave exactly as git's own commands see them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ...git.repo import git_value, run_git

FALSE = {"false", "no", "off", "0", ""}


@dataclass(frozen=True)
class HttpSettings:
    """The ``http.*`` settings git would apply to one URL."""

    headers: tuple[tuple[str, str], ...] = ()
    ssl_verify: bool = True
    ca_info: str | None = None


class GitConfig:
    """git config of the repository at ``cwd`` (or global/system only when ``cwd`` is None)."""

    def __init__(self, cwd: str | Path | None = None) -> None:
        self.cwd = cwd

        self._http: list[tuple[str, str, str | None]] | None = None  # (scope, name, value) in config order
        self._by_url: dict[str, HttpSettings] = {}

    def _run(
        self, *args: str, file: str | None = None, blob: str | None = None, env: dict[str, str] | None = None,
    ) -> list[str]:
        cmd = ["config"]
        if file:
            cmd += ["--file", file]
        if blob:
            cmd += ["--blob", blob]
        proc = run_git([*cmd, *args], self.cwd, env=env)
        if proc.returncode != 0:  # 1: key not set; other codes: no repo, bad file — both mean "no value"
            return []
        return proc.stdout.decode(errors="surrogateescape").splitlines()

    def _run_z(self, *args: str, env: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
        """``git config -z …``: (key, value) pairs, value None for a key written without ``=``."""
        proc = run_git(["config", "-z", *args], self.cwd, env=env)
        if proc.returncode != 0:
            return []
        out = []
        for item in proc.stdout.decode(errors="surrogateescape").split("\0"):
            if item:
                key, sep, value = item.partition("\n")
                out.append((key, value if sep else None))
        return out

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

    # -- http.<url>.* ---------------------------------------------------------------------------
    def http(self, url: str) -> HttpSettings:
        """``http.extraHeader``, ``http.sslVerify`` and ``http.sslCAInfo`` for ``url``, as git's own http
        code applies them: ``http.<url>.*`` matched by git's URL rules (scheme, host with ``*`` globs,
        port, path prefix on segment boundaries, user) — git itself does the matching.

        extraHeader is multi-valued, and ``git config --get-urlmatch`` keeps only the last value of the
        best match, whereas git's http code walks the entries in config order and adds each one whose
        URL matches at least as well as the best seen so far (an empty value clears the list). So every
        extraHeader entry gets a probe key holding the scopes up to it, and one ``--get-urlmatch`` call
        says which entries git would add. One git call per distinct URL, and none when no ``http.*`` key
        is URL-scoped."""
        key = _strip(url)
        got = self._by_url.get(key)
        if got is None:
            got = self._by_url[key] = self._http_for(key)
        return got

    def _http_settings(self) -> list[tuple[str, str, str | None]]:
        if self._http is None:
            self._http = []
            for k, value in self._run_z("--get-regexp", r"^http\."):
                rest, _, name = k[len("http.") :].rpartition(".") if "." in k[len("http.") :] else ("", "", k[len("http.") :])
                self._http.append((rest, name.lower(), value))
        return self._http

    def _http_for(self, url: str) -> HttpSettings:
        entries = self._http_settings()
        if not any(scope for scope, _, _ in entries):  # nothing URL-scoped: no matching to do
            best = {name: value for _, name, value in entries}
            return _settings([v for _, n, v in entries if n == "extraheader"], best)
        headers = [(scope, value) for scope, name, value in entries if name == "extraheader"]
        probes: list[tuple[str, str]] = []
        for i in range(len(headers)):
            for j in range(i + 1):
                scope = headers[j][0]
                probes.append((f"http.{scope}.coralxh{i}" if scope else f"http.coralxh{i}", str(j)))
        base = int(os.environ.get("GIT_CONFIG_COUNT") or 0)
        env = {**os.environ, "GIT_CONFIG_COUNT": str(base + len(probes))}
        for n, (k, v) in enumerate(probes, base):
            env[f"GIT_CONFIG_KEY_{n}"] = k
            env[f"GIT_CONFIG_VALUE_{n}"] = v
        best = dict(self._run_z("--get-urlmatch", "http", url, env=env))
        taken = [value for i, (_, value) in enumerate(headers) if best.get(f"http.coralxh{i}") == str(i)]
        return _settings(taken, {k[len("http.") :]: v for k, v in best.items()})


def _settings(extra: list[str | None], best: dict[str, str | None]) -> HttpSettings:
    headers: list[tuple[str, str]] = []
    for value in extra:
        if not value:  # an empty value resets the list (lets a repository drop inherited headers)
            headers.clear()
            continue
        name, sep, val = value.partition(":")
        if sep and name.strip():
            headers.append((name.strip(), val.strip()))
    verify = best.get("sslverify", "true")
    return HttpSettings(tuple(headers), verify is None or verify.strip().lower() not in FALSE, best.get("sslcainfo") or None)


def _strip(url: str) -> str:
    """``url`` without password, query and fragment: nothing git matches on, nothing secret in argv."""
    u = urlsplit(url)
    netloc = u.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if u.port:
        netloc += f":{u.port}"
    if u.username:
        netloc = f"{u.username}@{netloc}"
    return urlunsplit((u.scheme, netloc, u.path, "", ""))
