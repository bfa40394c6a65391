"""Hugging Face ``transformers`` adapter: a ``TrainerCallback`` that checkpoints into git.

    from coral_git.integrations.transformers import CoralCallback
    trainer = Trainer(..., callbacks=[CoralCallback(".", policy=CheckpointPolicy(monitor="eval_loss", mode="min"))])

Requires ``transformers``; without it, creating the callback raises ``CheckpointError`` saying so.
"""

from __future__ import annotations

import os
from typing import Any

from .checkpoints import missing_adapter
from .torch import CheckpointManager, CheckpointPolicy

try:  # pragma: no cover - depends on what is installed
    from transformers import TrainerCallback as _Base
except ImportError:  # pragma: no cover
    _Base = None  # type: ignore[assignment,misc]

MISSING = "the transformers adapter needs Hugging Face transformers: pip install transformers (or use CheckpointManager directly)"

if _Base is None:
    CoralCallback = missing_adapter("CoralCallback", MISSING)
else:  # pragma: no cover - exercised only where transformers is installed

    class CoralCallback(_Base):  # type: ignore[no-redef]
        """Commit checkpoints of a ``Trainer`` run to ``branch`` of the repository at ``repo_dir``.

        Counts steps on ``on_step_end``; calls ``epoch_end`` with the evaluation metrics on
        ``on_evaluate`` (or on ``on_epoch_end`` when the run does not evaluate).
        """

        def __init__(
            self,
            repo_dir: str | os.PathLike = ".",
            *,
            branch: str = "checkpoints",
            policy: CheckpointPolicy | None = None,
            async_: bool = False,
            **manager_kwargs: Any,
        ) -> None:
            self.repo_dir, self.branch, self.policy, self.async_ = repo_dir, branch, policy, async_
            self.kwargs = manager_kwargs
            self.manager: CheckpointManager | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, lr_scheduler: Any = None, **kw: Any) -> None:
            self.manager = CheckpointManager(
                self.repo_dir, model, optimizer, lr_scheduler, branch=self.branch, policy=self.policy, async_=self.async_, **self.kwargs
            )
            self.manager.global_step = state.global_step

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.manager is not None:
                self.manager.step()

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kw: Any) -> None:
            if self.manager is not None:
                nums = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float))}
                self.manager.epoch_end(round(state.epoch or 0), **nums)

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            strategy = str(getattr(args, "eval_strategy", getattr(args, "evaluation_strategy", "no")))
            if self.manager is not None and strategy.endswith("no"):
                self.manager.epoch_end(round(state.epoch or 0))

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.manager is not None:
                self.manager.close()
