"""A standalone Git LFS client (batch API, basic transfers): coral's chunk packs stored on any LFS server.

Imports only the standard library, ``requests`` and ``coral_git.errors``, so it can be wired into
push/fetch wherever the remote code ends up. See docs/remote.md, "Packs on the wire".
"""

from .client import Action, LfsClient, LfsObject
from .endpoint import Endpoint, SshTarget, derive, parse_ssh, resolve
from .errors import LfsAuthError, LfsEndpointError, LfsError, LfsIntegrityError, LfsUnreachableError
from .gitconfig import GitConfig

__all__ = [
    "Action",
    "Endpoint",
    "GitConfig",
    "LfsAuthError",
    "LfsClient",
    "LfsEndpointError",
    "LfsError",
    "LfsIntegrityError",
    "LfsObject",
    "LfsUnreachableError",
    "SshTarget",
    "derive",
    "parse_ssh",
    "resolve",
]
