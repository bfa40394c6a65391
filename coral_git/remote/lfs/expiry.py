"""When a grant of an LFS server stops working: ``expires_in`` / ``expires_at`` as the spec reads them.

Batch actions and ``git-lfs-authenticate`` answers carry the same two fields (S3-signed hrefs and
GitLab's ssh grants last minutes), so both are read here.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

MARGIN = 5.0  # seconds: a grant expiring sooner is renewed before use (git-lfs uses 5 s too)


def expires_at(raw: dict, now: float) -> float | None:
    """``time.time()`` of expiry, or None when not said. ``expires_in`` (seconds from ``now``) wins over
    ``expires_at`` (RFC 3339), as the spec says; 0 and Go's zero time mean "not said", as git-lfs reads them."""
    expires_in = raw.get("expires_in")
    if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in != 0:
        return now + float(expires_in)
    value = raw.get("expires_at")
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if when.year > 1:
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return None


def expiring(expires: float | None, granted: float, now: float | None = None) -> bool:
    """Whether a grant expires within ``MARGIN``, or half its lifetime if that is shorter (so a grant
    of 1 s is still used at once instead of being renewed for ever)."""
    if expires is None:
        return False
    now = time.time() if now is None else now
    return now >= expires - min(MARGIN, max(expires - granted, 0.0) / 2)
