"""compile_trunks compiles each ViT's block stack (student and teacher) as one unit, lazily."""

from __future__ import annotations

import pytest
import timm
import torch

from pipeline.pretrain.compile import compile_trunks, is_compiled, vit_trunks
from pipeline.pretrain.methods import Distillation, DistillationSpec


def test_compiles_the_student_and_teacher_trunks_only() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=0, dynamic_img_size=True)
    m = Distillation(vit, DistillationSpec(out_dim=16, hidden_dim=8, bottleneck_dim=8))
    trunks = vit_trunks(m)
    assert len(trunks) == 2 and all(isinstance(t, torch.nn.Sequential) for t in trunks)
    assert not any(is_compiled(t) for t in trunks)
    assert compile_trunks(m) == 2
    assert all(is_compiled(t) for t in trunks)
    assert not any(is_compiled(b) for t in trunks for b in t)  # one graph per trunk, not per block
    assert torch._dynamo.config.recompile_limit >= 16


def test_no_vit_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no timm ViT"):
        compile_trunks(torch.nn.Linear(2, 2))
