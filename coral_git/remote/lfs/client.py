"""A Git LFS client: the batch API and the basic transfer adapter, with retries, auth and ranged reads.

Objects are ``(oid, size)`` with oid the sha256 of the exact bytes (the LFS spec). Uploads stream
from files; downloads stream to a temp file next to the destination, are checked against oid and size,
then renamed — so nothing half-written is ever visible locally, whatever the server does.

HTTP goes through ``requests`` (urllib3 underneath): connection pooling per thread, streamed request
bodies with a Content-Length, and the proxy/CA environment (``HTTPS_PROXY``, ``NO_PROXY``,
``REQUESTS_CA_BUNDLE``) that users behind corporate proxies already set.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import random
import secrets
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from urllib.parse import urlsplit

import requests

from . import credentials, expiry
from .endpoint import Endpoint
from .errors import LfsAuthError, LfsError, LfsIntegrityError, LfsUnreachableError
from .gitconfig import GitConfig

MEDIA_TYPE = "application/vnd.git-lfs+json"
BATCH_LIMIT = 100  # objects per batch request, as git-lfs sends them
DEFAULT_CONCURRENCY = 8  # git-lfs's lfs.concurrenttransfers default
BLOCK = 1 << 20
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 60.0  # seconds: the longest Retry-After waited for at once

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class LfsObject:
    """An LFS object: lowercase hex sha256 of its bytes, and its exact size."""

    oid: str
    size: int

    @classmethod
    def of_file(cls, path: str | Path) -> LfsObject:
        h = hashlib.sha256()
        size = 0
        with open(path, "rb") as f:
            while block := f.read(BLOCK):
                h.update(block)
                size += len(block)
        return cls(h.hexdigest(), size)

    @classmethod
    def of_bytes(cls, data: bytes) -> LfsObject:
        return cls(hashlib.sha256(data).hexdigest(), len(data))


@dataclass(frozen=True, slots=True)
class Action:
    """Where and how to transfer one object. Hosts backed by S3/GCS/Azure sign hrefs for minutes:
    ``expires_at`` (``time.time()`` seconds, from ``expires_in``/``expires_at``) says until when."""

    href: str
    headers: dict[str, str]
    expires_at: float | None = None
    granted_at: float = 0.0

    def expiring(self, now: float | None = None) -> bool:
        """Whether the href expires within the margin (``expiry.MARGIN``, or half its lifetime if shorter)."""
        return expiry.expiring(self.expires_at, self.granted_at, now)


class _Refused(Exception):
    """A transfer href answered 401/403: expired or revoked; one new batch request may fix it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class _FileBody:
    """A file read in blocks for a streamed PUT; ``len`` gives requests the Content-Length."""

    def __init__(self, path: Path, size: int, progress: Progress | None) -> None:
        self.f = open(path, "rb")
        self.left = size
        self.progress = progress

    def __len__(self) -> int:
        return self.left

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        if data and self.progress:
            self.progress(len(data))
        return data

    def close(self) -> None:
        self.f.close()


class LfsClient:
    """One remote's LFS endpoint. Thread-safe; transfers run ``concurrency`` at a time."""

    def __init__(
        self,
        endpoint: Endpoint,
        remote: str = "",
        config: GitConfig | None = None,
        concurrency: int | None = None,
        retries: int = 5,
        backoff: float = 0.25,
        timeout: tuple[float, float] = (15.0, 120.0),
    ) -> None:
        self.endpoint = endpoint
        self.remote = remote or endpoint.url
        self.config = config or GitConfig()
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.concurrency = concurrency or _concurrency(self.config)
        self.range_supported: bool | None = None  # learnt from the first ranged read
        self.stats = {"requests": 0, "retries": 0, "bytes_up": 0, "bytes_down": 0, "puts": 0, "puts_saved": 0}
        self.stats["renewals"] = 0  # batch requests made again for an expired or refused href
        self._put_once = False  # a first PUT went out (upload: the first one goes alone)
        self._local = threading.local()
        self._auth_lock = threading.Lock()
        self._cred: credentials.Credential | None = None
        self._cred_approved = False
        self._stats_lock = threading.Lock()
        self._apis: dict[str, Endpoint] = {}  # per operation: the endpoint after git-lfs-authenticate (ssh)
        self._renewed: dict[tuple[str, str], dict[str, Action]] = {}  # (operation, oid) -> latest actions
        self._renew_lock = threading.Lock()
        self._origins = {_origin(endpoint.url)}

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def _where(self) -> str:
        return f"remote '{self.remote}' ({self.endpoint.url})" if self.remote != self.endpoint.url else f"LFS server {self.endpoint.url}"

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.trust_env = True
            self._local.session = s
        return s

    def _count(self, key: str, n: int = 1) -> None:
        with self._stats_lock:
            self.stats[key] += n

    def _same_origin(self, url: str) -> bool:
        """Whether ``url`` is on the LFS server itself (credentials go there, never to a storage href)."""
        return _origin(url) in self._origins

    def _api(self, operation: str) -> Endpoint:
        """The batch endpoint for ``operation``: for an ssh remote, what ``git-lfs-authenticate`` grants
        (asked once per operation, as git-lfs does; its headers then authenticate every batch request)."""
        if self.endpoint.ssh is None:
            return self.endpoint
        with self._auth_lock:
            ep = self._apis.get(operation)
            if ep is None or ep.expiring():  # GitLab's ssh grants last minutes (expires_in)
                ep = self.endpoint.authenticated(operation, _ssh_command(self.config), self.remote)
                self._apis[operation] = ep
                self._origins.add(_origin(ep.url))
            return ep

    def _verify(self, url: str) -> bool | str:
        """TLS checking for ``url``: ``http.<url>.sslVerify`` / ``GIT_SSL_NO_VERIFY``, ``http.<url>.sslCAInfo``."""
        if os.environ.get("GIT_SSL_NO_VERIFY"):
            return False
        http = self.config.http(url)
        if not http.ssl_verify:
            return False
        return http.ca_info or True

    def _headers(self, url: str, extra: dict[str, str], method: str = "GET") -> dict[str, str]:
        """http.extraHeader for ``url``, then the caller's headers, then credentials if none says otherwise."""
        headers = dict(self.config.http(url).headers)
        if self._same_origin(url):
            headers.update(self.endpoint.headers)
            # an ssh grant authenticates transfers on the LFS host too (hrefs without headers of their own)
            grant = self._apis.get("download" if method == "GET" else "upload")
            if grant is not None and _origin(grant.url) == _origin(url):
                headers.update(grant.headers)
        headers.update(extra)
        if self._cred is not None and self._same_origin(url) and not any(k.lower() == "authorization" for k in headers):
            token = base64.b64encode(f"{self._cred.username}:{self._cred.password}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        return headers

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        body: Callable[[], object] | None = None,
        stream: bool = False,
        what: str = "request",
        href: bool = False,
        settled: Callable[[], bool] | None = None,
    ) -> requests.Response | None:
        """One HTTP exchange with retries (connection errors, 5xx, 429) and the 401 credential dance.

        ``href``: a transfer href from a batch answer; a 401/403 there (from storage elsewhere, or with
        the action's own Authorization) means it expired or was revoked: ``_Refused`` is raised so the
        caller asks for a new one, instead of trying the user's credentials on it.
        ``settled``: asked before a retry; True means the exchange is no longer needed (an upload
        the server got after all, though the answer was lost): None is returned, nothing re-sent.
        """
        attempt = 0
        auth_tries = 0
        while True:
            if attempt and settled is not None and settled():
                return None
            data = body() if body else None
            try:
                self._count("requests")
                resp = self._session().request(
                    method, url, headers=self._headers(url, headers or {}, method), data=data,
                    stream=stream, timeout=self.timeout, allow_redirects=True, verify=self._verify(url),
                )
            except (requests.ConnectionError, requests.Timeout) as e:
                if attempt >= self.retries:
                    raise LfsUnreachableError(
                        f"cannot reach {self._where} for {what} after {attempt + 1} tries ({type(e).__name__}); "
                        "check the network and the LFS URL (git config lfs.url), then retry"
                    ) from e
                attempt += 1
                self._sleep(attempt)
                continue
            finally:
                if data is not None and hasattr(data, "close"):
                    data.close()
            own_auth = any(k.lower() == "authorization" for k in headers or {})
            if href and (resp.status_code == 403 or (resp.status_code == 401 and (own_auth or not self._same_origin(url)))):
                msg = _message(resp)
                resp.close()
                raise _Refused(resp.status_code, msg)
            if resp.status_code == 401 and self._same_origin(url):
                resp.close()
                auth_tries += 1
                self._on_401(auth_tries)
                continue
            wait = _retry_after(resp.headers.get("Retry-After"))
            if resp.status_code in RETRY_STATUS and attempt < self.retries and (wait or 0) <= MAX_RETRY_AFTER:
                resp.close()
                attempt += 1
                self._sleep(attempt, resp.headers.get("Retry-After"))
                continue
            if resp.status_code in (429, 503):
                msg = _message(resp)
                resp.close()
                later = f"wait {wait:.0f} s (its Retry-After)" if wait else "wait a while"
                raise LfsUnreachableError(
                    f"{self._where} kept answering {resp.status_code} ({msg}) to {what} after {attempt + 1} tries: "
                    f"the server is rate-limiting or unavailable; {later} and retry"
                )
            if resp.status_code == 403:
                resp.close()
                raise LfsAuthError(
                    f"{self._where} refused {what} (403 Forbidden); check that your account may "
                    f"{'write to' if method == 'PUT' or 'upload' in what else 'read'} this repository"
                )
            if 200 <= resp.status_code < 300 and self._cred is not None and not self._cred_approved:
                with self._auth_lock:
                    if not self._cred_approved:
                        credentials.approve(self._cred, self.config)
                        self._cred_approved = True
            return resp

    def _on_401(self, tries: int) -> None:
        """First 401: ask git for credentials; a 401 with credentials: reject them and fail."""
        with self._auth_lock:
            if self._cred is not None and tries > 1:
                cred, self._cred = self._cred, None
                credentials.reject(cred, self.config)
                user = f" for user '{cred.username}'" if cred.username else ""
                raise LfsAuthError(
                    f"{self._where} refused the credentials{user}; update them in your credential helper "
                    "(or token) and retry"
                )
            if self._cred is None:
                cred = credentials.fill(self.endpoint.url, self.config)
                if cred is None:
                    raise LfsAuthError(
                        f"{self._where} asks for credentials and git has none; set up a credential helper "
                        "or token for this host (git config credential.helper …) and retry"
                    )
                self._cred = cred
                self._cred_approved = False

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        """Exponential backoff with jitter, or the server's ``Retry-After`` (seconds or an HTTP date)."""
        self._count("retries")
        wait = _retry_after(retry_after)
        if wait is None:
            wait = min(self.backoff * (2 ** (attempt - 1)), 8.0) * (0.75 + random.random() / 2)
        time.sleep(wait)

    # -- batch API ----------------------------------------------------------------------------
    def batch(self, operation: str, objects: list[LfsObject]) -> dict[str, dict]:
        """``POST objects/batch`` (split into requests of 100); the response object of each oid.

        Per the spec a 404 answer to the whole request means the repository does not exist (or this
        account may not see it) and a 422 that the request is invalid: both are errors naming the
        remote. Per-object ``error``s (404 missing, 410 removed, 422 invalid) stay in each object's
        answer for the caller to judge."""
        out: dict[str, dict] = {}
        for i in range(0, len(objects), BATCH_LIMIT):
            part = objects[i : i + BATCH_LIMIT]
            payload = {
                "operation": operation,
                "transfers": ["basic"],
                "objects": [{"oid": o.oid, "size": o.size} for o in part],
                "hash_algo": "sha256",
            }
            api = self._api(operation)
            resp = self._request(
                "POST", f"{api.url}/objects/batch",
                headers={**api.headers, "Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE},
                body=lambda payload=payload: _json_bytes(payload), what=f"the {operation} batch request",
            )
            with resp:
                if resp.status_code == 200:
                    try:
                        answer = resp.json()
                    except ValueError as e:
                        raise LfsError(f"{self._where} answered the batch request with no JSON; is lfs.url right?") from e
                    transfer = answer.get("transfer") or "basic"
                    if transfer != "basic":
                        raise LfsError(f"{self._where} chose transfer '{transfer}'; only 'basic' is supported")
                elif operation == "download" and _giftless_none_available(resp):
                    # giftless answers a whole download batch 404 when no object exists and 422 when every
                    # object has an error, instead of per-object errors: read them as such
                    error = {"code": resp.status_code, "message": _message(resp)}
                    answer = {"objects": [{"oid": o.oid, "size": o.size, "error": error} for o in part]}
                else:
                    raise self._batch_error(operation, resp)
            for obj in answer.get("objects") or []:
                out[obj.get("oid", "")] = obj
        return out

    def _batch_error(self, operation: str, resp: requests.Response) -> LfsError:
        """One line per refusal of a whole batch request: what the status means, what to do."""
        status, msg = resp.status_code, _message(resp)
        verb = "write to" if operation == "upload" else "read"
        if status == 404:
            return LfsError(
                f"{self._where} answered 404 to the {operation} batch request ({msg}): the repository does not "
                f"exist there or your account may not {verb} it; check the remote's URL (and lfs.url) and your access"
            )
        if status == 422:
            return LfsError(
                f"{self._where} rejected the {operation} batch request as invalid (422: {msg}); the server will not "
                "take these objects: check its object size limit and that lfs.url names a Git LFS server"
            )
        if status == 507:
            return LfsError(f"{self._where} has no storage left (507: {msg}); free space or raise the quota on the host, then retry")
        if status == 509:
            return LfsError(f"{self._where} says the bandwidth limit is exceeded (509: {msg}); wait for it to reset or raise it on the host, then retry")
        return LfsError(f"{self._where} answered {status} to the {operation} batch request: {msg}")

    def _object_error(self, oid: str, error: dict, operation: str) -> LfsError:
        """A per-object error of a batch answer, as one line."""
        code, msg = error.get("code"), str(error.get("message") or "").splitlines()[0:1]
        msg = msg[0][:200] if msg else ""
        if operation == "upload":
            return LfsError(f"{self._where} refuses to store object {oid} ({code}: {msg}); act on the server's message (quota, size limit, permissions)")
        if code == 404:
            return LfsError(f"{self._where} does not have object {oid} (404: {msg}); push it from a repository that has it")
        if code == 410:
            return LfsError(f"{self._where} says object {oid} was removed (410: {msg}); push it again from a repository that has it")
        if code == 422:
            return LfsError(f"{self._where} holds object {oid} in an invalid state (422: {msg}); push it again from a repository that has it")
        return LfsError(f"{self._where} cannot serve object {oid} ({code}: {msg}); check your access to the repository, then retry")

    def has(self, objects: Iterable[LfsObject]) -> set[str]:
        """Oids the server holds (with that exact size), by a download batch: read access is enough.
        Objects answered missing (404), removed (410) or invalid (422) are not held; other per-object
        errors (no access, server trouble) raise rather than pass for "missing"."""
        objects = list(objects)
        answer = self.batch("download", objects)
        out = set()
        for o in objects:
            resp = answer.get(o.oid) or {}
            if "download" in (resp.get("actions") or {}):
                out.add(o.oid)
            elif resp.get("error") and resp["error"].get("code") not in (404, 410, 422):
                raise self._object_error(o.oid, resp["error"], "download")
        return out

    # -- expiring hrefs -----------------------------------------------------------------------
    def _renew(self, obj: LfsObject, operation: str) -> dict[str, Action] | None:
        """New actions for one object by a new batch request; None for an upload the server now has."""
        self._count("renewals")
        resp = self.batch(operation, [obj]).get(obj.oid) or {}
        if resp.get("error"):
            raise self._object_error(obj.oid, resp["error"], operation)
        actions = _actions(resp.get("actions"))
        if operation not in actions:
            if operation == "upload":
                return None
            raise self._object_error(obj.oid, {"code": 404, "message": "no download action"}, operation)
        with self._renew_lock:
            self._renewed[(operation, obj.oid)] = actions
        return actions

    def _fresh(self, obj: LfsObject, operation: str, actions: dict[str, Action]) -> dict[str, Action] | None:
        """``actions``, or newer ones when an href expires within the margin (renewed once per client and
        shared: a range reader holding an old action picks up the renewed one)."""
        if not any(a.expiring() for a in actions.values()):
            return actions
        with self._renew_lock:
            latest = self._renewed.get((operation, obj.oid))
        if latest is not None and not any(a.expiring() for a in latest.values()):
            return latest
        return self._renew(obj, operation)

    def _transfer(self, obj: LfsObject, operation: str, actions: dict[str, Action], fn: Callable[[dict[str, Action]], object]) -> object:
        """``fn(actions)`` with hrefs that are not about to expire; an href answering 401/403 gets one new
        batch request, then the transfer is tried again. None when an upload turns out to be done."""
        current = self._fresh(obj, operation, actions)
        renewed = False
        while current is not None:
            try:
                return fn(current)
            except _Refused as e:
                if renewed:
                    verb = "write to" if operation == "upload" else "read"
                    raise LfsAuthError(
                        f"{self._where} refused the {operation} of object {obj.oid} ({e.status}: {e.message}) even with a "
                        f"new href from a new batch request; check that your account may {verb} this repository, then retry"
                    ) from None
                renewed = True
                current = self._renew(obj, operation)
        return None

    # -- upload -------------------------------------------------------------------------------
    def upload(self, files: Iterable[tuple[LfsObject, Path]], progress: Progress | None = None) -> list[str]:
        """Upload each (object, file) the server lacks; return the oids actually sent.

        An object answered without actions is already on the server. Each PUT streams the file, then
        the ``verify`` action (if any) confirms the server holds exactly ``size`` bytes under ``oid``.
        """
        files = list(files)
        by_oid = {o.oid: (o, p) for o, p in files}
        answer = self.batch("upload", [o for o, _ in files])
        todo = []
        for oid, (obj, path) in by_oid.items():
            resp = answer.get(oid)
            if resp is None:
                raise LfsError(f"{self._where} left object {oid} out of its batch answer")
            if resp.get("error"):
                raise self._object_error(oid, resp["error"], "upload")
            actions = _actions(resp.get("actions"))
            if "upload" in actions:
                todo.append((obj, path, actions["upload"], actions.get("verify")))
        todo.sort(key=lambda t: t[0].size)
        sent = [t[0].oid for t in todo]
        if len(todo) > 1 and not self._put_once:
            # the first PUT of a client goes alone, and the smallest: a server that fails or refuses
            # (credentials, quota, a storage folder created by two requests at once — giftless's local
            # storage answers 500 to one of them) costs a small body, not a 64 MiB pack sent twice
            self._put(*todo.pop(0), progress)
        self._parallel(lambda t: self._put(*t, progress), todo)
        return sent

    def _put(self, obj: LfsObject, path: Path, up: Action, verify: Action | None, progress: Progress | None) -> None:
        size = os.path.getsize(path)
        if size != obj.size:
            raise LfsError(f"internal error: {path} has {size} bytes, not the {obj.size} announced for {obj.oid}")
        actions = {"upload": up, **({"verify": verify} if verify is not None else {})}
        self._transfer(obj, "upload", actions, lambda a: self._put_one(obj, path, size, a["upload"], a.get("verify"), progress))

    def _put_one(self, obj: LfsObject, path: Path, size: int, up: Action, verify: Action | None, progress: Progress | None) -> None:
        headers = {"Content-Type": "application/octet-stream", **up.headers}
        self._put_once = True
        resp = self._request("PUT", up.href, headers, body=lambda: _FileBody(path, size, progress),
                             what=f"upload of {obj.oid[:12]}", settled=lambda: self._stored(obj), href=True)
        if resp is None:
            self._count("puts_saved")
            return  # the server holds it already: the failed attempt did arrive
        self._count("puts")
        with resp:
            if not 200 <= resp.status_code < 300:
                raise LfsError(f"{self._where} answered {resp.status_code} to the upload of object {obj.oid}: {_message(resp)}")
        self._count("bytes_up", size)
        if verify is not None:
            resp = self._request(
                "POST", verify.href, {"Accept": MEDIA_TYPE, "Content-Type": MEDIA_TYPE, **verify.headers},
                body=lambda: _json_bytes({"oid": obj.oid, "size": obj.size}), what=f"verify of {obj.oid[:12]}", href=True,
            )
            with resp:
                if not 200 <= resp.status_code < 300:
                    raise LfsError(f"{self._where} could not verify object {obj.oid} after upload ({resp.status_code}); retry the push")

    def _stored(self, obj: LfsObject) -> bool:
        """Before a PUT is sent again: whether the server has the object after all (a timeout or a
        dropped connection after the whole body went through). Unknown counts as no."""
        try:
            return obj.oid in self.has([obj])
        except LfsError:
            return False

    # -- download -----------------------------------------------------------------------------
    def download_actions(self, objects: list[LfsObject]) -> dict[str, Action]:
        """The download action of each object; LfsError naming the first one the server lacks."""
        answer = self.batch("download", objects)
        out = {}
        for o in objects:
            resp = answer.get(o.oid) or {}
            if resp.get("error"):
                raise self._object_error(o.oid, resp["error"], "download")
            actions = _actions(resp.get("actions"))
            if "download" not in actions:
                raise self._object_error(o.oid, {"code": 404, "message": "not on the server"}, "download")
            out[o.oid] = actions["download"]
        return out

    def download(self, objects: Iterable[tuple[LfsObject, Path]], progress: Progress | None = None) -> None:
        """Download each object to its path (verified, atomically renamed), ``concurrency`` at a time."""
        pairs = list(objects)
        actions = self.download_actions([o for o, _ in pairs])
        self._parallel(lambda t: self._get(t[0], actions[t[0].oid], t[1], progress), pairs)

    def _get(self, obj: LfsObject, action: Action, dest: Path, progress: Progress | None) -> None:
        self._transfer(obj, "download", {"download": action}, lambda a: self._get_once(obj, a["download"], Path(dest), progress))

    def _get_once(self, obj: LfsObject, action: Action, dest: Path, progress: Progress | None) -> None:
        attempt = 0
        while True:
            tmp = dest.parent / f".tmp-lfs-{os.getpid()}-{secrets.token_hex(6)}"
            try:
                resp = self._request("GET", action.href, action.headers, stream=True, what=f"download of {obj.oid[:12]}", href=True)
                with resp:
                    if resp.status_code != 200:
                        raise LfsError(f"{self._where} answered {resp.status_code} to the download of {obj.oid}: {_message(resp)}")
                    h = hashlib.sha256()
                    n = 0
                    with open(tmp, "wb") as f:
                        for block in resp.iter_content(BLOCK):
                            h.update(block)
                            f.write(block)
                            n += len(block)
                            if progress:
                                progress(len(block))
                self._count("bytes_down", n)
                if n != obj.size or h.hexdigest() != obj.oid:
                    raise LfsIntegrityError(
                        f"{self._where} sent {n} bytes for object {obj.oid} that do not match its oid/size; "
                        "the server copy may be damaged: push it again from a repository that has it"
                    )
                os.replace(tmp, dest)
                return
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                # the body broke off mid-stream: start this object again
                if attempt >= self.retries:
                    raise LfsUnreachableError(f"download of {obj.oid} from {self._where} kept breaking off ({type(e).__name__}); retry later") from e
                attempt += 1
                self._sleep(attempt)
            finally:
                tmp.unlink(missing_ok=True)

    def range_reader(self, obj: LfsObject, spool: Path, action: Action | None = None) -> Callable[[int, int], bytes]:
        """A ``(offset, length) -> bytes`` reader over one object (a wire pack): ranged GETs while the
        server honours Range; the first time it answers 200 instead, the whole object is kept (verified)
        at ``spool`` and every later read is local — a pack is downloaded at most once either way."""
        lock = threading.Lock()
        state: dict[str, Action | None] = {"action": action}

        def read(offset: int, length: int) -> bytes:
            with lock:
                if not spool.exists() and state["action"] is None:
                    state["action"] = self.download_actions([obj])[obj.oid]
            if not spool.exists() and self.range_supported is not False:
                return self.read_range(obj, offset, length, state["action"], spool)
            with lock:  # Range known to be ignored: one whole download, then local reads
                if not spool.exists():
                    self._get(obj, state["action"], spool, None)  # type: ignore[arg-type]
            with open(spool, "rb") as f:
                f.seek(offset)
                return f.read(length)

        return read

    def read_range(
        self, obj: LfsObject, start: int, length: int, action: Action | None = None, spool: Path | None = None,
    ) -> bytes:
        """Bytes ``[start, start+length)`` of an object: an HTTP ``Range`` GET where the server honours
        it (206); where it answers 200 the whole object is read (and its sha256 checked), keeping the
        slice — and the whole object at ``spool`` when given. ``range_supported`` records which happened.
        """
        if start < 0 or length < 0 or start + length > obj.size:
            raise ValueError(f"range {start}+{length} is outside object {obj.oid} of {obj.size} bytes")
        if length == 0:
            return b""
        if action is None:
            action = self.download_actions([obj])[obj.oid]
        return self._transfer(  # type: ignore[return-value]
            obj, "download", {"download": action}, lambda a: self._read_range_once(obj, start, length, a["download"], spool),
        )

    def _read_range_once(self, obj: LfsObject, start: int, length: int, action: Action, spool: Path | None) -> bytes:
        end = start + length - 1
        attempt = 0
        while True:
            try:
                resp = self._request(
                    "GET", action.href, {**action.headers, "Range": f"bytes={start}-{end}"}, stream=True,
                    what=f"ranged read of {obj.oid[:12]}", href=True,
                )
                with resp:
                    if resp.status_code == 206:
                        got = resp.headers.get("Content-Range", "")
                        data = resp.raw.read(length + 1, decode_content=True)
                        if not got.startswith(f"bytes {start}-{end}/") or len(data) != length:
                            raise LfsIntegrityError(f"{self._where} answered a ranged read of {obj.oid} with the wrong bytes ({got!r})")
                        self.range_supported = True
                        self._count("bytes_down", length)
                        return data
                    if resp.status_code != 200:
                        raise LfsError(f"{self._where} answered {resp.status_code} to the download of {obj.oid}: {_message(resp)}")
                    self.range_supported = False
                    return self._slice_of_whole(obj, resp, start, length, spool)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
                if attempt >= self.retries:
                    raise LfsUnreachableError(f"download of {obj.oid} from {self._where} kept breaking off ({type(e).__name__}); retry later") from e
                attempt += 1
                self._sleep(attempt)

    def _slice_of_whole(
        self, obj: LfsObject, resp: requests.Response, start: int, length: int, spool: Path | None,
    ) -> bytes:
        h = hashlib.sha256()
        n = 0
        parts = []
        tmp = spool.parent / f".tmp-lfs-{os.getpid()}-{secrets.token_hex(6)}" if spool is not None else None
        try:
            with open(tmp, "wb") if tmp is not None else nullcontext() as f:
                for block in resp.iter_content(BLOCK):
                    h.update(block)
                    if f is not None:
                        f.write(block)
                    lo, hi = max(start - n, 0), min(start + length - n, len(block))
                    if lo < hi:
                        parts.append(block[lo:hi])
                    n += len(block)
            self._count("bytes_down", n)
            if n != obj.size or h.hexdigest() != obj.oid:
                raise LfsIntegrityError(f"{self._where} sent {n} bytes for object {obj.oid} that do not match its oid/size")
            if tmp is not None and spool is not None:
                os.replace(tmp, spool)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return b"".join(parts)

    # -- concurrency --------------------------------------------------------------------------
    def _parallel(self, fn: Callable, items: list) -> None:
        """Run ``fn`` over items, ``concurrency`` at a time; the first error cancels what has not started."""
        if not items:
            return
        if self.concurrency <= 1 or len(items) == 1:
            for it in items:
                fn(it)
            return
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            futures = [pool.submit(fn, it) for it in items]
            try:
                for fut in futures:
                    fut.result()
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise


def _action(a: dict, now: float | None = None) -> Action:
    """An action of a batch answer, with its expiry (see ``expiry.expires_at``)."""
    now = time.time() if now is None else now
    headers = {str(k): str(v) for k, v in (a.get("header") or {}).items()}
    return Action(a["href"], headers, expiry.expires_at(a, now), now)


def _actions(raw: object) -> dict[str, Action]:
    if not isinstance(raw, dict):
        return {}
    now = time.time()
    return {name: _action(a, now) for name, a in raw.items() if isinstance(a, dict) and a.get("href")}


def _giftless_none_available(resp: requests.Response) -> bool:
    """giftless's whole-batch answers for "no object is available" (its messages, verbatim)."""
    phrase = {404: "Cannot find any of the requested objects", 422: "Cannot validate any of the requested objects"}
    return resp.status_code in phrase and _message(resp).endswith(phrase[resp.status_code])


def _retry_after(value: str | None) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - time.time(), 0.0)


def _json_bytes(payload: dict) -> bytes:
    return json.dumps(payload).encode()


def _message(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("message", "")).splitlines()[0][:200] or resp.reason
    except (ValueError, AttributeError, IndexError):
        return resp.reason or ""


def _origin(url: str) -> tuple[str, str | None, int | None]:
    u = urlsplit(url)
    return (u.scheme, u.hostname, u.port)


def _ssh_command(config: GitConfig) -> str:
    """The ssh program as git picks it: GIT_SSH_COMMAND, core.sshCommand, GIT_SSH, then ``ssh``."""
    if os.environ.get("GIT_SSH_COMMAND"):
        return os.environ["GIT_SSH_COMMAND"]
    value = config.get("core.sshcommand")
    if value:
        return value
    if os.environ.get("GIT_SSH"):
        return shlex.quote(os.environ["GIT_SSH"])
    return "ssh"


def _concurrency(config: GitConfig) -> int:
    for key in ("coral.concurrenttransfers", "lfs.concurrenttransfers"):
        value = config.get(key)
        if value and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return DEFAULT_CONCURRENCY
