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
    backbone_frozen: bool = False  # no backward pass through the student's backbone this step


class SSLMethod(nn.Module):
    """An objective over multi-crop views.

    Subclasses implement :meth:`loss` and :meth:`export_backbone`; methods with a
    teacher also override :meth:`update_teacher` and :meth:`cancel_last_layer_gradients`.
    """

    has_teacher: bool = False
    # "batch" or "frozen" (pipeline.config.pretrain.ModelConfig.batch_norm, resolved): applied by train()
    batch_norm: str = "batch"

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

    def backbones(self) -> list[nn.Module]:
        """The timm backbones, the student's first (its parameters get the backbone's learning rate)."""
        return []

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
        for bb in self.backbones():
            for bn in batch_norms(bb):
                # frozen: the weights' own statistics, never updated. batch: batch statistics in
                # training, the teacher's too (as DINO runs a ResNet teacher), so its running
                # statistics follow its own inputs rather than staying at their initial values.
                bn.train(mode and self.batch_norm == "batch")
        return self

    def frozen_modules(self) -> list[nn.Module]:
        return []


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every BatchNorm layer of ``model`` (timm's BatchNormAct2d included)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]  # noqa: SLF001
