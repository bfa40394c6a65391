"""coral-git: git for neural-network weights.

The Python API lives here; the ``git coral`` command is a thin layer over it.
"""

from __future__ import annotations

__version__ = "0.1.0"
