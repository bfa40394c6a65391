"""Where a remote's Git LFS API lives, resolved the way git-lfs does it (see docs/remote.md).

Order: ``remote.<name>.lfsurl`` (``lfspushurl`` for uploads), ``lfs.url`` (``lfs.pushurl``), the same keys
in a committed ``.lfsconfig``, then a URL derived from the remote's git URL: ``<url>.git/info/lfs`` for
http(s), the same on the ssh host with an ``ssh … git-lfs-authenticate`` call for ssh remotes. A local
path or ``file://`` remote has an LFS endpoint only when one of the keys is set.

Note: git-lfs itself lets ``lfs.url`` win over ``remote.<name>.lfsurl``; here the more specific key wins,
as everywhere else in git configuration.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from . import expiry
from .errors import LfsAuthError, LfsEndpointError
from .gitconfig import GitConfig

SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")


@dataclass(frozen=True)
class SshTarget:
    """An ssh remote: who to log in as and which repository path to name to git-lfs-authenticate."""

    user: str | None
    host: str
    port: int | None
    path: str

    def argv(self, operation: str, ssh_command: str = "ssh") -> list[str]:
        """``ssh [-p port] [user@]host git-lfs-authenticate <path> <operation>``."""
        cmd = shlex.split(ssh_command)
        if self.port:
            cmd += ["-p", str(self.port)]
        cmd.append(f"{self.user}@{self.host}" if self.user else self.host)
        cmd += ["git-lfs-authenticate", self.path, operation]
        return cmd


@dataclass(frozen=True)
class Endpoint:
    """An LFS API base URL (``…/info/lfs``), where it came from, and how to authenticate to it."""

    url: str
    source: str  # "remote.<name>.lfsurl", "lfs.url", ".lfsconfig lfs.url", "derived"
    ssh: SshTarget | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expires_at: float | None = None  # of a git-lfs-authenticate grant (its expires_in / expires_at)
    granted_at: float = 0.0

    def expiring(self) -> bool:
        return expiry.expiring(self.expires_at, self.granted_at)

    def authenticated(self, operation: str, ssh_command: str = "ssh", remote: str = "") -> Endpoint:
        """For an ssh remote: run git-lfs-authenticate and return the href and headers it grants."""
        if self.ssh is None:
            return self
        argv = self.ssh.argv(operation, ssh_command)
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise LfsAuthError(f"remote '{remote}': cannot run '{argv[0]}' for git-lfs-authenticate ({e}); check ssh") from e
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise LfsAuthError(
                f"remote '{remote}': ssh {self.ssh.host} git-lfs-authenticate failed ({why}); "
                "check that 'ssh' to the host works and that the host serves Git LFS"
            )
        now = time.time()
        try:
            answer = json.loads(proc.stdout)
            href = answer.get("href") or self.url
            headers = {str(k): str(v) for k, v in (answer.get("header") or {}).items()}
            expires = expiry.expires_at(answer, now)
        except (ValueError, AttributeError) as e:
            raise LfsAuthError(f"remote '{remote}': git-lfs-authenticate on {self.ssh.host} answered no JSON") from e
        return Endpoint(href.rstrip("/"), self.source, None, {**self.headers, **headers}, expires, now)


def parse_ssh(url: str) -> SshTarget | None:
    """An ``ssh://`` or scp-like (``user@host:path``) git URL, else None."""
    if url.startswith(("ssh://", "git+ssh://", "ssh+git://")):
        u = urlsplit(url)
        if not u.hostname:
            return None
        return SshTarget(u.username, u.hostname, u.port, u.path.lstrip("/"))
    if "://" in url or os.path.exists(url):
        return None
    m = SCP_LIKE.match(url)
    if not m or "/" in m.group("host"):
        return None
    return SshTarget(m.group("user"), m.group("host"), None, m.group("path"))


def derive(url: str) -> Endpoint | None:
    """The default LFS endpoint of a git URL (None for local paths and ``file://``)."""
    if url.startswith(("http://", "https://")):
        base = url.rstrip("/")
        base = base if base.endswith(".git") else base + ".git"
        return Endpoint(base + "/info/lfs", "derived")
    ssh = parse_ssh(url)
    if ssh is not None:
        path = ssh.path.strip("/")
        path = path if path.endswith(".git") else path + ".git"
        # https on the same host, as git-lfs assumes (the ssh port says nothing about the https one)
        return Endpoint(f"https://{ssh.host}/{path}/info/lfs", "derived", ssh)
    return None


def resolve(remote: str, operation: str = "download", config: GitConfig | None = None) -> Endpoint:
    """The LFS endpoint of git remote ``remote`` for ``operation`` (``upload``/``download``)."""
    config = config or GitConfig()
    remote_url = config.get(f"remote.{remote}.url")
    if operation == "upload":  # git-lfs derives the upload endpoint from the push URL when there is one
        remote_url = config.get(f"remote.{remote}.pushurl") or remote_url
    keys = []
    if operation == "upload":
        keys += [f"remote.{remote}.lfspushurl", "lfs.pushurl"]
    keys += [f"remote.{remote}.lfsurl", "lfs.url"]
    for key in keys:
        value = config.get(key)
        if value:
            return _explicit(value, key)
    for key in keys:
        value = config.lfsconfig(key)
        if value:
            return _explicit(value, f".lfsconfig {key}")
    if remote_url is None:
        # a URL given directly instead of a remote name (git push <url>)
        if "://" in remote or parse_ssh(remote) is not None:
            remote_url = remote
        else:
            raise LfsEndpointError(f"no git remote named '{remote}'; check 'git remote -v'")
    ep = derive(remote_url)
    if ep is None:
        raise LfsEndpointError(
            f"remote '{remote}' ({remote_url}) is a local path and has no Git LFS server; "
            f"set one with 'git config remote.{remote}.lfsurl URL' (or lfs.url)"
        )
    return ep


def _explicit(value: str, source: str) -> Endpoint:
    """An LFS URL set in config; an ssh URL there means: authenticate over ssh, as git-lfs does."""
    if value.startswith(("http://", "https://")):
        return Endpoint(value.rstrip("/"), source)
    ep = derive(value)
    if ep is None:
        raise LfsEndpointError(f"{source} = {value} is not an http(s) or ssh URL; set it to the server's LFS URL")
    return Endpoint(ep.url, source, ep.ssh)
