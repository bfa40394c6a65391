"""PyTorch Lightning adapter: a ``Callback`` that checkpoints into git through ``CheckpointManager``.

    from coral_git.integrations.lightning import CoralCheckpoint
    trainer = Trainer(callbacks=[CoralCheckpoint(".", policy=CheckpointPolicy(monitor="val_acc"))])

Requires ``lightning`` (or the older ``pytorch_lightning``); without it, creating the callback
raises ``CheckpointError`` saying so.
"""

from __future__ import annotations

import os
from typing import Any

from .checkpoints import missing_adapter
from .torch import CheckpointManager, CheckpointPolicy

try:  # pragma: no cover - depends on what is installed
    import lightning.pytorch as _pl
except ImportError:  # pragma: no cover
    try:
        import pytorch_lightning as _pl  # type: ignore[no-redef]
    except ImportError:
        _pl = None  # type: ignore[assignment]

MISSING = "the Lightning adapter needs PyTorch Lightning: pip install lightning (or use CheckpointManager directly)"

if _pl is None:
    CoralCheckpoint = missing_adapter("CoralCheckpoint", MISSING)
else:  # pragma: no cover - exercised only where Lightning is installed

    class CoralCheckpoint(_pl.Callback):  # type: ignore[no-redef]
        """Commit checkpoints of a Lightning run to ``branch`` of the repository at ``repo_dir``.

        Counts optimizer steps per training batch and calls ``epoch_end`` with
        ``trainer.callback_metrics`` after each validation (or each training epoch when there is none).
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
            super().__init__()
            self.repo_dir, self.branch, self.policy, self.async_ = repo_dir, branch, policy, async_
            self.kwargs = manager_kwargs
            self.manager: CheckpointManager | None = None
            self._epoch_done = -1

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            opt = trainer.optimizers[0] if trainer.optimizers else None
            configs = getattr(trainer, "lr_scheduler_configs", None) or []
            sched = configs[0].scheduler if configs else None
            self.manager = CheckpointManager(
                self.repo_dir, pl_module, opt, sched, branch=self.branch, policy=self.policy, async_=self.async_, **self.kwargs
            )
            self.manager.global_step = trainer.global_step
            self.manager.epoch = trainer.current_epoch

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            if self.manager is not None:
                self.manager.step()

        def _epoch(self, trainer: Any) -> None:
            if self.manager is None or trainer.sanity_checking or self._epoch_done == trainer.current_epoch:
                return
            self._epoch_done = trainer.current_epoch
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
            self.manager.epoch_end(trainer.current_epoch + 1, **metrics)

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            self._epoch(trainer)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not trainer.val_dataloaders:
                self._epoch(trainer)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            if self.manager is not None:
                self.manager.close()
