"""[CLS]-only last block: same outputs, losses and gradients as the full forward pass."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pipeline.config.pretrain import MethodConfig
from pipeline.pretrain.methods import SelfDistillation, StepInputs
from pipeline.pretrain.methods import self_distillation as self_distillation_mod
from pipeline.pretrain.methods.cls_encoder import cls_block_forward, encode_cls, supports_cls_only
from tests.unit.pretrain_tiny import tiny_vit


def _vit(**kw: object) -> torch.nn.Module:
    return tiny_vit(**kw)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("kw", [{}, {"qk_norm": True, "init_values": 0.1}, {"qkv_bias": False}])
def test_cls_block_matches_full_block(fused: bool, kw: dict) -> None:
    torch.manual_seed(0)
    blk = _vit(**kw).blocks[-1]
    assert supports_cls_only(blk)
    blk.attn.fused_attn = fused
    x = torch.randn(3, 17, 32, requires_grad=True)
    full = blk(x)[:, :1]
    fast = cls_block_forward(blk, x)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-6)
    g_full = torch.autograd.grad(full.square().sum(), [x, *blk.parameters()])
    g_fast = torch.autograd.grad(fast.square().sum(), [x, *blk.parameters()])
    for a, b in zip(g_fast, g_full):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_encode_cls_falls_back_for_other_blocks() -> None:
    from lightly.models.modules.masked_vision_transformer_timm import MaskedVisionTransformerTIMM

    enc = MaskedVisionTransformerTIMM(_vit(), weight_initialization="skip", pos_embed_initialization="skip")
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(encode_cls(enc, x), enc.encode(x)[:, 0], rtol=1e-5, atol=1e-6)
    enc.vit.blocks[-1] = torch.nn.Sequential(enc.vit.blocks[-1])  # e.g. a wrapped block
    assert not supports_cls_only(enc.vit.blocks[-1])
    torch.testing.assert_close(encode_cls(enc, x), enc.encode(x)[:, 0])


def test_encode_cls_keeps_a_compiled_trunk_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiled trunk runs as one call: iterating its blocks would bypass the compiled graph."""
    from lightly.models.modules.masked_vision_transformer_timm import MaskedVisionTransformerTIMM

    from pipeline.pretrain.methods import cls_encoder

    enc = MaskedVisionTransformerTIMM(_vit(), weight_initialization="skip", pos_embed_initialization="skip")
    blocks = enc.vit.blocks
    calls = []

    def compiled(*args: object, **kw: object) -> torch.Tensor:  # stands in for torch.compile's wrapper
        calls.append(1)
        return blocks._call_impl(*args, **kw)

    blocks._compiled_call_impl = compiled
    monkeypatch.setattr(cls_encoder, "cls_block_forward", lambda *a: pytest.fail("bypassed the compiled trunk"))
    x = torch.randn(2, 3, 16, 16)
    out = encode_cls(enc, x)
    assert calls and out.shape == (2, 32)


@pytest.mark.parametrize("weights", [(1.0, 0.0, 0.0), (1.0, 1.0, 0.1)])
def test_distillation_loss_and_grads_unchanged(weights: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """The step with the [CLS]-only path equals the step with full encodes (the old code path)."""
    spec = MethodConfig(
        **dict(zip(("dino_weight", "ibot_weight", "koleo_weight"), weights)),
        out_dim=64,
        hidden_dim=32,
        bottleneck_dim=16,
        mask_probability=1.0,
    )
    torch.manual_seed(0)
    fast = SelfDistillation(_vit(), spec).train()
    torch.manual_seed(0)  # weight-normed heads cannot be deep-copied: build a twin from the same seed
    ref = SelfDistillation(_vit(), spec).train()
    assert all(torch.equal(p, q) for p, q in zip(fast.state_dict().values(), ref.state_dict().values()))
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(4, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(4, 3, 8, 8, generator=g) for _ in range(3)
    ]
    step = StepInputs(teacher_temp=0.04, n_global=2)

    def run(m: SelfDistillation) -> tuple[torch.Tensor, dict]:
        random.seed(7)  # same iBOT block masks for both (lightly draws them with `random` and torch)
        np.random.seed(7)
        torch.manual_seed(7)
        loss, parts = m.loss(views, step)
        loss.backward()
        return loss, parts

    loss_fast, parts_fast = run(fast)
    monkeypatch.setattr(self_distillation_mod, "encode_cls", lambda enc, x, dtype=None: enc.encode(x)[:, 0])
    loss_ref, parts_ref = run(ref)
    torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-5, atol=1e-6)
    assert parts_fast.keys() == parts_ref.keys()
    for (name, p), q in zip(fast.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:  # float32 sums in another order: relative error of the whole tensor
            assert (p.grad - q.grad).norm() <= 1e-4 * q.grad.norm() + 1e-8, name
    torch.testing.assert_close(fast.dino_loss.center, ref.dino_loss.center)
