"""SimCLR: the contrastive baseline (lightly's ``NTXentLoss``) on the first two global crops."""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules.heads import SimCLRProjectionHead
from torch import nn

from pipeline.pretrain.methods.base import SSLMethod, StepInputs


class SimCLR(SSLMethod):
    """A timm backbone (pooled features, ``num_classes=0``) + projection head + NT-Xent.

    Negatives are gathered from all ranks under DDP (``gather_distributed``).
    """

    def __init__(
        self, backbone: nn.Module, hidden_dim: int = 1024, projection_dim: int = 128, temperature: float = 0.1
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = SimCLRProjectionHead(backbone.num_features, hidden_dim, projection_dim, batch_norm=True)
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)

    def trainable_modules(self) -> list[nn.Module]:
        return [self.backbone, self.head]

    def backbones(self) -> list[nn.Module]:
        return [self.backbone]

    def export_backbone(self) -> nn.Module:
        return self.backbone

    def loss(self, views: list[torch.Tensor], step: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if len(views) < 2:
            raise ValueError("SimCLR needs two global crops (pretrain.augment.global_crops >= 2)")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not step.backbone_frozen):
            f0, f1 = self.backbone(views[0]), self.backbone(views[1])
        z0, z1 = self.head(f0), self.head(f1)
        loss = self.criterion(z0.float(), z1.float())
        return loss, {"ntxent": loss.detach()}
