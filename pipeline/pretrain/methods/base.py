"""What every SSL method offers the LightningModule."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class StepInputs:
    """Per-step values the schedules give a method."""

    teacher_temp: float
    n_global: int


class SSLMethod(nn.Module):
    """An objective over multi-crop views.

    Subclasses implement :meth:`loss` and :meth:`export_backbone`; methods with a
    teacher also override :meth:`update_teacher` and :meth:`cancel_last_layer_gradients`.
    """

    has_teacher: bool = False

    def loss(self, views: list[torch.Tensor], step: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its named parts (detached, for logging)."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """Health signals of the last :meth:`loss` call (detached tensors), logged under ``diag/``."""
        return {}

    def export_backbone(self) -> nn.Module:
        """The timm model to evaluate and export (the teacher when there is one)."""
        raise NotImplementedError

    def trainable_modules(self) -> list[nn.Module]:
        """Modules the optimizer updates."""
        raise NotImplementedError

    def update_teacher(self, momentum: float) -> None:  # optional hook
        """EMA update of the teacher from the student."""

    def cancel_last_layer_gradients(self) -> None:  # optional hook
        """Drop the gradients of the heads' last layer (frozen early in training)."""

    def compile_losses(self, mode: str | None = None) -> None:  # optional hook
        """``torch.compile`` the loss computations (beyond the backbones, which ``compile_method`` does)."""

    def train(self, mode: bool = True) -> SSLMethod:
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()  # the teacher never drops paths, whatever Lightning asks
        return self

    def frozen_modules(self) -> list[nn.Module]:
        return []
