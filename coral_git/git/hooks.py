"""What coral does in each git hook it installs. Steps register here by hook name."""

from __future__ import annotations

from collections.abc import Callable

HookStep = Callable[[list[str], str], int]
STEPS: dict[str, list[HookStep]] = {"pre-push": []}


def run(name: str, args: list[str], stdin: str) -> int:
    """Run every step registered for hook ``name``; the first non-zero exit stops the hook."""
    _load_steps()
    for step in STEPS.get(name, []):
        rc = step(args, stdin)
        if rc:
            return rc
    return 0


def _load_steps() -> None:
    """Import the modules that register hook steps (they are optional features)."""
    import importlib

    for mod in ("coral_git.remote.push", "coral_git.git.direct"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
