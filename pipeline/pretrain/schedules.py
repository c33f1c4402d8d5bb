"""Step schedules: learning rate, weight decay, teacher momentum and temperature.

All are pure functions of the optimizer step, so a resumed run gets exactly the
values of an uninterrupted one without any scheduler state in the checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine(step: float, total: float, start: float, end: float) -> float:
    """Cosine from ``start`` (step 0) to ``end`` (step ``total`` and after)."""
    if total <= 0:
        return end
    t = min(max(step / total, 0.0), 1.0)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t))


def linear(step: float, total: float, start: float, end: float) -> float:
    """Linear from ``start`` to ``end`` over ``total`` steps, then ``end``."""
    if total <= 0:
        return end
    t = min(max(step / total, 0.0), 1.0)
    return start + (end - start) * t


def warmup_cosine(step: float, total: float, warmup: float, peak: float, final: float) -> float:
    """Linear warm-up from 0 to ``peak`` over ``warmup`` steps, then cosine down to ``final``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return cosine(step - warmup, total - warmup, peak, final)


@dataclass(frozen=True)
class Schedules:
    """Every per-step hyper-parameter of a run, given its length.

    Attributes:
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch (epoch-based settings convert through it).
        lr / min_lr / warmup_epochs: Learning rate, already scaled to the global batch.
        weight_decay / weight_decay_end: Cosine weight-decay schedule (DINO raises it).
        momentum_start / momentum_end: Teacher EMA momentum, cosine to ``momentum_end``.
        warmup_teacher_temp / teacher_temp / warmup_teacher_temp_epochs: Linear teacher temperature warm-up.
        freeze_last_layer_epochs: Heads' last layer frozen this long.
        freeze_backbone_epochs / backbone_warmup_epochs: The backbone's share of the learning rate is
            0 while frozen, then ramps linearly to 1 (see :meth:`backbone_factor`).
    """

    total_steps: int
    steps_per_epoch: int
    lr: float
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: float = 0.0
    freeze_last_layer_epochs: float = 1.0
    freeze_backbone_epochs: float = 0.0
    backbone_warmup_epochs: float = 0.0

    def learning_rate(self, step: int) -> float:
        warm = min(self.warmup_epochs * self.steps_per_epoch, self.total_steps)
        return warmup_cosine(step, self.total_steps, warm, self.lr, self.min_lr)

    def wd(self, step: int) -> float:
        return cosine(step, self.total_steps, self.weight_decay, self.weight_decay_end)

    def momentum(self, step: int) -> float:
        return cosine(step, self.total_steps, self.momentum_start, self.momentum_end)

    def teacher_temperature(self, step: int) -> float:
        warm = self.warmup_teacher_temp_epochs * self.steps_per_epoch
        return linear(step, warm, self.warmup_teacher_temp, self.teacher_temp)

    def last_layer_frozen(self, step: int) -> bool:
        return step < self.freeze_last_layer_epochs * self.steps_per_epoch

    def backbone_frozen(self, step: int) -> bool:
        return step < self.freeze_backbone_epochs * self.steps_per_epoch

    def backbone_factor(self, step: int) -> float:
        """The backbone's share of the learning rate: 0 while frozen, then a linear ramp to 1."""
        if self.backbone_frozen(step):
            return 0.0
        start = self.freeze_backbone_epochs * self.steps_per_epoch
        ramp = self.backbone_warmup_epochs * self.steps_per_epoch
        return 1.0 if ramp <= 0 else min(1.0, (step - start + 1) / ramp)
