"""``git credential fill/approve/reject``: credential helpers, stores and tokens work as for git itself."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ...git.repo import run_git
from .gitconfig import GitConfig


@dataclass(frozen=True)
class Credential:
    """What ``git credential`` answers for one URL (the fields are passed back on approve/reject)."""

    fields: dict[str, str]

    @property
    def username(self) -> str:
        return self.fields.get("username", "")

    @property
    def password(self) -> str:
        return self.fields.get("password", "")


def _describe(url: str, config: GitConfig) -> dict[str, str]:
    u = urlsplit(url)
    fields = {"protocol": u.scheme, "host": u.hostname or ""}
    if u.port:
        fields["host"] += f":{u.port}"
    if config.get_bool_urlmatch("credential.usehttppath", url, False):
        fields["path"] = u.path.lstrip("/")
    if u.username:
        fields["username"] = unquote(u.username)
    return fields


def _run(action: str, fields: dict[str, str], config: GitConfig) -> dict[str, str]:
    text = "".join(f"{k}={v}\n" for k, v in fields.items()) + "\n"
    proc = run_git(["credential", action], config.cwd, input=text.encode())
    if action != "fill" or proc.returncode != 0:
        return {}
    out = {}
    for line in proc.stdout.decode(errors="surrogateescape").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def fill(url: str, config: GitConfig) -> Credential | None:
    """Credentials for ``url`` from git's helpers (or a prompt on a terminal); None if there are none."""
    u = urlsplit(url)
    if u.username and u.password:  # credentials written in the URL, as git accepts them
        return Credential({**_describe(url, config), "password": unquote(u.password)})
    got = _run("fill", _describe(url, config), config)
    if not got.get("password") and not got.get("username"):
        return None
    return Credential(got)


def approve(cred: Credential, config: GitConfig) -> None:
    """Tell the helpers these credentials worked (a store helper saves them)."""
    _run("approve", cred.fields, config)


def reject(cred: Credential, config: GitConfig) -> None:
    """Tell the helpers these credentials were refused (a store helper forgets them)."""
    _run("reject", cred.fields, config)
