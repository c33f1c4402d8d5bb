"""Warn when DINO's teacher targets collapse (uniform, or one dominant prototype), the failure a loss curve hides.

A collapsed DINO run still has a finite, smooth loss, so the NaN watchdog cannot see it:
with uniform targets the [CLS] loss settles at ``log(K)`` and the backbone stops learning.
On ELPV at batch 64 with the demo's learning rate scaled linearly, the loss fell for 13
steps and then climbed to ``log(1024)`` within one epoch (docs/pretraining.md). This reads
the method's ``teacher_entropy`` and ``teacher_batch_entropy`` diagnostics (see
``target_entropy``) and says so, once, with the knobs that usually fix it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, cast

import lightning.pytorch as pl

if TYPE_CHECKING:
    from pipeline.pretrain.module import PretrainModule

log = logging.getLogger(__name__)


class CollapseMonitor(pl.Callback):
    """Warn once when the normalised target entropy stays at a collapse level.

    Args:
        start_step: Steps to ignore; ``None``: the module's learning-rate warm-up and last-layer
            freeze (targets start near uniform while the heads are still random).
        every: Read the diagnostic every ``every`` steps (each read waits for the device).
        patience: Consecutive reads at a collapse level before warning.
        high: Per-image target entropy (fraction of ``log K``) at or above which targets are uniform.
        low: Batch-mean target entropy (fraction of ``log min(N, K)``) at or below which one
            prototype takes every image.
    """

    def __init__(
        self, start_step: int | None = None, every: int = 5, patience: int = 4, high: float = 0.98, low: float = 0.1
    ) -> None:
        self.start_step, self.every, self.patience, self.high, self.low = start_step, max(1, every), patience, high, low
        self.streak = 0
        self.warned: str | None = None
        self.last: float | None = None
        self.last_batch: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sched = getattr(pl_module, "schedules", None)
        if self.start_step is None and sched is not None:
            # the heads of a warm start settle on a frozen backbone first: not a collapse either
            frozen = getattr(sched, "freeze_backbone_epochs", 0.0)
            first = max(sched.warmup_epochs, sched.freeze_last_layer_epochs, frozen)
            self.start_step = int(first * sched.steps_per_epoch)

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step < (self.start_step or 0) or step % self.every:
            return
        diag = cast("PretrainModule", pl_module).method.diagnostics()
        if "teacher_entropy" not in diag:
            return
        self.last = float(diag["teacher_entropy"])
        self.last_batch = float(diag.get("teacher_batch_entropy", 1.0))
        kind = "uniform" if self.last >= self.high else "dominant" if self.last_batch <= self.low else None
        self.streak = self.streak + 1 if kind else 0
        if kind and self.streak >= self.patience and self.warned is None:
            self.warned = kind
            fix = (
                "lower pretrain.optim.lr (it is per 256 images and scaled with the batch), lower "
                "pretrain.method.teacher_temp, or raise pretrain.method.momentum_start; on look-alike images "
                "(one cell type, one tissue), pretrain.method.head_batch_norm=true with weaker photometric "
                "augmentation (pretrain.augment.jitter_prob, blur, solarize)"
                if kind == "uniform"
                else "lower pretrain.method.center_momentum (the center then follows faster) "
                "or raise pretrain.method.teacher_temp"
            )
            others = getattr(getattr(pl_module.method, "spec", None), "ibot_weight", 0) > 0
            log.warning(
                "DINO collapse: the teacher's targets have been %s (entropy per image %.3f, of the batch mean %.3f) "
                "for %d checks up to step %d; the DINO [CLS] loss no longer teaches the backbone anything%s. "
                "Usual fixes: %s.",
                kind,
                self.last,
                self.last_batch,
                self.streak,
                step,
                " (iBOT and KoLeo still train it)" if others else "",
                fix,
            )
