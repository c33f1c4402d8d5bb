"""lightly's reference DINOv2 training step, as in lightly's ``examples/pytorch/dinov2.py``.

The throughput benchmark runs it on the same device, batch and views as our step, so the
ratio between the two is the speed-up our implementation buys. What is kept from the
example: ``MaskedVisionTransformerTIMM`` student and teacher (``antialias=False``, layer scale
``init_values=1e-5``, uniform drop-path 0.1 on the student), ``DINOv2ProjectionHead``
shared by the DINO and iBOT losses, ``random_block_mask`` on the global crops, KoLeo on the
global [CLS] tokens, the weight-decay write into the param groups and ``update_momentum``.
What is changed: the learning-rate and temperature schedules are held at one value
(they cost nothing), and the step runs under the same bf16 autocast as ours.
"""

from __future__ import annotations

import copy

import timm
import torch
from lightly.loss import DINOLoss, IBOTPatchLoss, KoLeoLoss
from lightly.models.modules import DINOv2ProjectionHead, MaskedVisionTransformerTIMM
from lightly.models.utils import random_block_mask, update_drop_path_rate, update_momentum
from torch import nn


class ReferenceDINOv2(nn.Module):
    """Student/teacher pair built the way lightly's example builds it, on any timm ViT name."""

    def __init__(self, name: str, img_size: int, out_dim: int) -> None:
        super().__init__()
        vit = timm.create_model(name, img_size=img_size, num_classes=0, dynamic_img_size=True, init_values=1e-5)
        self.teacher_backbone = MaskedVisionTransformerTIMM(vit=vit, antialias=False, pos_embed_initialization="skip")
        self.student_backbone = copy.deepcopy(self.teacher_backbone)
        update_drop_path_rate(self.student_backbone.vit, drop_path_rate=0.1, mode="uniform")
        dim = vit.embed_dim
        self.student_head = DINOv2ProjectionHead(input_dim=dim, output_dim=out_dim)
        self.teacher_head = DINOv2ProjectionHead(input_dim=dim, output_dim=out_dim)
        self.teacher_head.load_state_dict(self.student_head.state_dict())
        for m in (self.teacher_backbone, self.teacher_head):
            for p in m.parameters():
                p.requires_grad = False
            m.eval()
        self.dino = DINOLoss(output_dim=out_dim)
        self.ibot = IBOTPatchLoss(output_dim=out_dim)
        self.koleo = KoLeoLoss()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, views: list[torch.Tensor], teacher_temp: float = 0.04) -> torch.Tensor:
        global_views, local_views = torch.cat(views[:2]), torch.cat(views[2:])
        b = len(global_views)
        h, w = self.teacher_backbone.vit.patch_embed.grid_size
        mask = global_views.new_zeros((b, self.teacher_backbone.sequence_length), dtype=torch.bool)
        # the example's defaults; fewer patches per block only on the tiny grids of CPU smoke runs
        block_mask = random_block_mask(
            size=(b, h, w), min_num_masks_per_block=min(4, max(1, h * w // 10)), device=mask.device
        )
        mask[:, 1:] = block_mask.flatten(start_dim=1)
        with torch.no_grad():
            t_feat = self.teacher_backbone.encode(global_views)
            t_cls_out = self.teacher_head(t_feat[:, 0])
            t_masked_out = self.teacher_head(t_feat[mask])
        s_feat = self.student_backbone.encode(global_views, mask=mask)
        s_global_cls = s_feat[:, 0]
        s_global_out = self.student_head(s_global_cls)
        s_masked_out = self.student_head(s_feat[mask])
        s_local_out = self.student_head(self.student_backbone.encode(local_views, mask=None)[:, 0])
        s_cls_out = torch.cat([s_global_out, s_local_out])
        dino = self.dino(
            teacher_out=t_cls_out.chunk(2), student_out=s_cls_out.chunk(len(views)), teacher_temp=teacher_temp
        )
        ibot = self.ibot(teacher_out=t_masked_out, student_out=s_masked_out, mask=block_mask, teacher_temp=teacher_temp)
        koleo = 0.1 * sum(self.koleo(t) for t in s_global_cls.chunk(2))
        return dino + ibot + koleo

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        update_momentum(self.student_backbone, self.teacher_backbone, m=momentum)
        update_momentum(self.student_head, self.teacher_head, m=momentum)


def reference_step(
    model: ReferenceDINOv2, opt: torch.optim.Optimizer, views: list[torch.Tensor], device: torch.device, bf16: bool
) -> torch.Tensor:
    """One optimisation step of the example's loop (constant schedules), under bf16 autocast if ``bf16``; its loss."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model.loss(views)
    loss.backward()
    for group in opt.param_groups:
        if group["weight_decay"] != 0.0:
            group["weight_decay"] = 0.04
    opt.step()
    opt.zero_grad()
    model.update_teacher(0.996)
    return loss.detach()
