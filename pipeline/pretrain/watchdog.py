"""Stop (or roll back) when the loss stops being finite."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


class NonFiniteWatchdog(pl.Callback):
    """Check the loss after every batch; all ranks agree before acting.

    ``mode="stop"`` raises :class:`FloatingPointError` naming the step and the
    usual causes. ``mode="rollback"`` reloads the model and optimizer state of
    ``checkpoint`` (the last good one) and goes on with the next batches, at most
    ``max_rollbacks`` times.
    """

    def __init__(self, mode: str = "stop", checkpoint: Path | None = None, max_rollbacks: int = 3) -> None:
        if mode not in ("stop", "rollback"):
            raise ValueError(f"pretrain.monitor.watchdog={mode!r}; expected stop or rollback")
        self.mode, self.checkpoint, self.max_rollbacks = mode, checkpoint, max_rollbacks
        self.rollbacks = 0
        self._step = 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._step = trainer.global_step  # the step the batch belongs to (global_step moves on after it)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        step = self._step
        msg = (
            f"non-finite loss ({loss.item() if loss is not None else 'n/a'}) at step {step}, "
            f"epoch {trainer.current_epoch}, "
            f"batch {batch_idx}. Usual causes: learning rate too high (pretrain.optim.lr), fp16 overflow "
            "(use bf16-mixed or 32-true), too low teacher temperature, or a corrupt image."
        )
        can_roll = self.checkpoint is not None and self.checkpoint.is_file() and self.rollbacks < self.max_rollbacks
        if self.mode == "stop" or not can_roll:
            if self.mode == "rollback":
                msg += f" Rollback impossible (checkpoint {self.checkpoint}, {self.rollbacks} rollbacks done)."
            raise FloatingPointError(msg)
        self.rollbacks += 1
        log.warning("%s Rolling back to %s (rollback %d/%d).", msg, self.checkpoint, self.rollbacks, self.max_rollbacks)
        assert self.checkpoint is not None  # can_roll
        ckpt = torch.load(self.checkpoint, map_location=pl_module.device, weights_only=True)
        pl_module.load_state_dict(ckpt["state_dict"])
        for opt, state in zip(trainer.optimizers, ckpt["optimizer_states"]):
            opt.load_state_dict(state)
