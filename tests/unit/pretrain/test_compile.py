"""compile_trunks compiles each ViT's block stack (student and teacher) as one unit, lazily; compiled loss terms
match the eager ones."""

from __future__ import annotations

import random

import pytest
import timm
import torch
from torch._dynamo.utils import counters

from pipeline.config.pretrain import MethodConfig
from pipeline.pretrain.compile import compile_trunks, is_compiled, vit_trunks
from pipeline.pretrain.methods import SelfDistillation, StepInputs
from tests.unit.pretrain_tiny import tiny_vit


def test_compiles_the_student_and_teacher_trunks_only() -> None:
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=0, dynamic_img_size=True)
    m = SelfDistillation(vit, MethodConfig(out_dim=16, hidden_dim=8, bottleneck_dim=8))
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


def _tiny_method(centering: str) -> SelfDistillation:
    torch.manual_seed(0)
    vit = tiny_vit(depth=1)
    spec = MethodConfig(out_dim=64, hidden_dim=16, bottleneck_dim=8, mask_probability=1.0, centering=centering)
    return SelfDistillation(vit, spec)


@pytest.mark.parametrize("centering", ["softmax", "sinkhorn"])
def test_compiled_loss_terms_match_eager_and_do_not_recompile_per_temperature(centering: str) -> None:
    torch._dynamo.reset()
    eager, compiled = _tiny_method(centering), _tiny_method(centering)
    compiled.compile_losses()
    graphs = []
    for step in range(4):  # a new teacher temperature (warm-up schedule) and mask count every step
        g = torch.Generator().manual_seed(step)
        views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)] + [torch.randn(4, 3, 8, 8, generator=g)]
        inputs = StepInputs(teacher_temp=0.04 + 0.01 * step, n_global=2)
        out = []
        for m in (eager, compiled):
            random.seed(step)  # the iBOT masks
            loss, parts = m.loss(views, inputs)
            loss.backward()
            out.append((loss, parts, m.student_head.last_layer.weight_v.grad.clone()))
            m.zero_grad(set_to_none=True)
        (le, pe, ge), (lc, pc, gc) = out
        torch.testing.assert_close(lc, le, rtol=1e-5, atol=1e-6)
        assert pc.keys() == pe.keys() == {"dino", "ibot", "koleo"}
        torch.testing.assert_close(gc, ge, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(compiled.ibot_loss.center.value, eager.ibot_loss.center.value)
        graphs.append(counters["stats"]["unique_graphs"])
    # the second step's new mask count makes that size dynamic; later temperatures and counts add no graph
    assert graphs[3] == graphs[1], graphs
