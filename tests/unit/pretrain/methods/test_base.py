"""BatchNorm in continued pretraining: the trap of re-estimated statistics, and the default that avoids it."""

from __future__ import annotations

import torch

from pipeline.config.pretrain import MethodConfig, ModelConfig
from pipeline.pretrain.backbone_init import resolve_batch_norm
from pipeline.pretrain.methods import SelfDistillation, StepInputs
from pipeline.pretrain.methods.base import batch_norms
from tests.unit.pretrain_tiny import tiny_cnn

SMALL = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16, ibot_weight=0.0)


def _clean(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _augmented(seed: int) -> list[torch.Tensor]:
    # Augmented crops are distributed unlike the images the model is evaluated on
    # (colour jitter, solarisation, blur): here, a shifted and stretched version of them.
    return [2.5 * _clean(8, seed + i) + 1.0 for i in range(2)] + [2.5 * _clean(8, seed + 2)[..., :16, :16] + 1.0]


def _pretrained() -> torch.nn.Module:
    """A CNN whose BatchNorm statistics were estimated on clean images (like ImageNet weights' own)."""
    torch.manual_seed(0)
    m = tiny_cnn()
    for bn in batch_norms(m):
        bn.momentum = None  # cumulative average
    m.train()
    with torch.no_grad():
        for s in range(4):
            m(_clean(16, 100 + s))
    return m.eval()


def _features_after_steps(batch_norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of clean images before and after three loss evaluations on augmented crops, with no update."""
    model = _pretrained()
    x = _clean(6, 7)
    with torch.no_grad():
        before = model(x)
    m = SelfDistillation(model, MethodConfig(**SMALL))
    m.batch_norm = batch_norm
    m.train()
    for s in range(3):  # no optimizer step: a learning rate of zero
        m.loss(_augmented(10 * s), StepInputs(0.04, 2))
    m.eval()
    with torch.no_grad():
        return before, m.export_backbone()(x)


def test_batch_statistics_change_the_exported_features_even_without_learning() -> None:
    before, after = _features_after_steps("batch")
    # The trap: nothing was learned, yet the exported backbone computes other features on clean images,
    # because the teacher's running statistics now describe augmented crops.
    assert (after - before).norm() > 0.2 * before.norm()


def test_frozen_statistics_keep_the_starting_features() -> None:
    before, after = _features_after_steps("frozen")
    # equal up to float rounding: the method keeps CNNs in channels_last, which changes the conv kernels
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


def test_a_warm_start_freezes_batch_norm_by_default() -> None:
    assert resolve_batch_norm(ModelConfig(name="resnet10t", weights="efficientnet_lite0_pypi")) == "frozen"
    assert resolve_batch_norm(ModelConfig(name="resnet10t")) == "batch"
    assert resolve_batch_norm(ModelConfig(name="resnet10t", weights="w.pt", batch_norm="batch")) == "batch"
    m = SelfDistillation(_pretrained(), MethodConfig(**SMALL))
    m.batch_norm = "frozen"
    m.train()
    assert m.student.training and not any(bn.training for bn in batch_norms(m.student))
