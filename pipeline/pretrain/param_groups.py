"""Optimizer parameter groups: heads at the full learning rate, the backbone at its own share.

Continued pretraining moves generic weights with smaller steps than the fresh heads on top of
them, and early layers less than late ones (layer-wise decay, as BEiT and DINOv2 fine-tune).
Each group carries ``lr_scale`` (its fixed share), ``backbone`` (whether the backbone's
schedule, frozen then ramped, applies) and ``apply_wd`` (whether weight decay follows the
schedule); :class:`pipeline.pretrain.module.PretrainModule` sets the rates every step.
"""

from __future__ import annotations

from typing import Any

from lightly.models.utils import get_weight_decay_parameters
from timm.optim import param_groups_layer_decay
from torch import nn

from pipeline.pretrain.methods.base import SSLMethod


def _split(modules: list[nn.Module], skip: set[int]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay, no_decay = get_weight_decay_parameters(modules)
    keep = [p for p in decay if p.requires_grad and id(p) not in skip]
    keep_no = [p for p in no_decay if p.requires_grad and id(p) not in skip]
    return keep, keep_no


def param_groups(method: SSLMethod, backbone_lr_scale: float = 1.0, layer_decay: float = 1.0) -> list[dict[str, Any]]:
    """Groups of the method's trainable parameters (see the module docstring).

    With ``layer_decay < 1`` timm's layer grouping of the student backbone gives each layer
    ``layer_decay ** (layers above it)``; weight decay then follows timm's rule (none for 1-d
    parameters and the model's ``no_weight_decay()`` names), otherwise lightly's (none for
    norms, biases and position embeddings), as without a backbone split.
    """
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"pretrain.optim.layer_decay={layer_decay}; expected 0 < layer_decay <= 1")
    if backbone_lr_scale < 0:
        raise ValueError(f"pretrain.optim.backbone_lr_scale={backbone_lr_scale}; expected >= 0")
    bbs = method.backbones()
    backbone = bbs[0] if bbs else None
    groups: list[dict[str, Any]] = []
    in_backbone: set[int] = set()
    if backbone is not None:
        in_backbone = {id(p) for p in backbone.parameters()}
        if layer_decay < 1.0:
            nwd: set[str] = set(getattr(backbone, "no_weight_decay", lambda: set())())
            for g in param_groups_layer_decay(
                backbone, weight_decay=1.0, no_weight_decay_list=nwd, layer_decay=layer_decay
            ):
                wd = g["weight_decay"] > 0
                groups.append(
                    {
                        "params": g["params"],
                        "lr_scale": g["lr_scale"] * backbone_lr_scale,
                        "backbone": True,
                        "apply_wd": wd,
                        **({} if wd else {"weight_decay": 0.0}),
                    }
                )
        else:
            decay, no_decay = _split([backbone], set())
            groups += [
                {"params": decay, "lr_scale": backbone_lr_scale, "backbone": True, "apply_wd": True},
                {
                    "params": no_decay,
                    "lr_scale": backbone_lr_scale,
                    "backbone": True,
                    "apply_wd": False,
                    "weight_decay": 0.0,
                },
            ]
    decay, no_decay = _split(method.trainable_modules(), in_backbone)
    groups += [
        {"params": decay, "lr_scale": 1.0, "backbone": False, "apply_wd": True},
        {"params": no_decay, "lr_scale": 1.0, "backbone": False, "apply_wd": False, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
