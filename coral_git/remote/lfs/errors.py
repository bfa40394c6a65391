"""Errors of the LFS client: each message is one line naming the remote and what to do."""

from __future__ import annotations

from ...errors import RemoteError


class LfsError(RemoteError):
    """The LFS server cannot satisfy a request (after retries where retrying makes sense)."""


class LfsAuthError(LfsError):
    """The server refused the credentials, or none were available."""


class LfsUnreachableError(LfsError):
    """The server could not be reached (connection refused, DNS, timeouts) after every retry."""


class LfsEndpointError(LfsError):
    """No LFS endpoint can be derived for the remote."""


class LfsIntegrityError(LfsError):
    """Downloaded bytes do not match the oid or size the batch API promised."""
