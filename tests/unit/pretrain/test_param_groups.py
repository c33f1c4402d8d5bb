"""Parameter groups: heads at the full rate, the backbone at its share, early layers less with layer decay."""

from __future__ import annotations

import pytest
import torch

from pipeline.config.pretrain import MethodConfig
from pipeline.pretrain.methods import SelfDistillation
from pipeline.pretrain.param_groups import param_groups
from tests.unit.pretrain_tiny import tiny_cnn, tiny_vit

SMALL = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, ibot_weight=0.0)


def _scale_of(groups: list[dict], p: torch.nn.Parameter) -> tuple[float, bool]:
    (g,) = [g for g in groups if any(q is p for q in g["params"])]
    return g["lr_scale"], g["backbone"]


@pytest.mark.parametrize("make", [tiny_vit, tiny_cnn])
def test_every_trainable_parameter_once_backbone_scaled(make) -> None:
    m = SelfDistillation(make(), MethodConfig(**SMALL))
    groups = param_groups(m, backbone_lr_scale=0.1, layer_decay=0.5)
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for mod in m.trainable_modules() for p in mod.parameters() if p.requires_grad}
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable
    bb = list(m.student_backbone().parameters())
    first, last = bb[0], [p for p in bb if p.ndim > 1][-1]
    s_first, b_first = _scale_of(groups, first)
    s_last, b_last = _scale_of(groups, last)
    assert b_first and b_last and s_first < s_last <= 0.1 + 1e-12  # early layers move least
    assert _scale_of(groups, m.student_head.last_layer.weight_v) == (1.0, False)
    # no weight decay on biases and norms, as without layer decay
    assert all(g["weight_decay"] == 0.0 for g in groups if not g["apply_wd"])
    assert any(not g["apply_wd"] and any(p.ndim == 1 for p in g["params"]) for g in groups if g["backbone"])


def test_without_layer_decay_the_backbone_share_is_uniform() -> None:
    m = SelfDistillation(tiny_vit(), MethodConfig(**SMALL))
    groups = param_groups(m, backbone_lr_scale=0.25)
    assert {g["lr_scale"] for g in groups if g["backbone"]} == {0.25}
    assert {g["lr_scale"] for g in groups if not g["backbone"]} == {1.0}
    with pytest.raises(ValueError, match="layer_decay"):
        param_groups(m, layer_decay=1.5)
