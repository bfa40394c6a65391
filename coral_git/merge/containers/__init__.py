"""Format-specific merging: one :class:`~coral_git.merge.model.Container` per pointer format.

Owns the non-tensor part of each container format (safetensors' ``__metadata__``, a torch zip's
pickle) and how a merged file of that format is written. May import ``merge.model``/``merge.pieces``
and the layers below ``merge`` (formats, store, core); never ``merge.plan`` or anything above.
"""

from __future__ import annotations

from ..model import Container
from .safetensors import SafetensorsContainer

CONTAINERS: dict[str, Container] = {"safetensors": SafetensorsContainer()}


def container_for(fmt: str) -> Container | None:
    """The merge handler of a pointer format (torch zip's is loaded on first use)."""
    if fmt not in CONTAINERS and fmt == "torch-zip":
        from .torchzip import TorchZipContainer

        CONTAINERS[fmt] = TorchZipContainer()
    return CONTAINERS.get(fmt)
