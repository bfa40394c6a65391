"""coral-git: git for neural-network weights.

The Python API lives here; the ``git coral`` command is a thin layer over it.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = ("open", "open_file", "diff", "history", "load_torch", "ModelFile", "TensorInfo")


def __getattr__(name: str):  # lazy: `import coral_git` stays cheap for the filter
    if name in _API:
        from .api import model as api

        return getattr(api, name)
    raise AttributeError(f"module 'coral_git' has no attribute {name!r}")
