"""Opaque fallback: any byte string, stored losslessly as the skeleton with no tensor spans."""

from __future__ import annotations

from .layout import Layout

FORMAT = "opaque"


def read(buf: memoryview) -> Layout:
    """Every byte is skeleton."""
    return Layout(FORMAT, len(buf), ())
