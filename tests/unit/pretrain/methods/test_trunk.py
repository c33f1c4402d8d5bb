"""bf16 compute weights for the ViT blocks: a bf16 residual stream, fp32 gradients on the fp32 weights."""

from __future__ import annotations

import pytest
import torch
from lightly.models.modules.masked_vision_transformer_timm import MaskedVisionTransformerTIMM
from torch._dynamo.utils import counters

from pipeline.pretrain.methods.trunk import encode_tokens, param_dtype, run_blocks
from tests.unit.pretrain_tiny import tiny_vit


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_vit(init_values=0.1)


def test_param_dtype_names() -> None:
    assert param_dtype("float32") is None and param_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"pretrain\.method\.param_dtype=\'float64\'"):
        param_dtype("float64")


def test_without_a_dtype_the_blocks_run_as_they_are() -> None:
    blocks = _vit().blocks
    x = torch.randn(2, 17, 32)
    torch.testing.assert_close(run_blocks(blocks, x), blocks(x), rtol=0, atol=0)


def test_bf16_weights_keep_the_residual_stream_in_bf16_where_autocast_alone_does_not() -> None:
    blocks = _vit().blocks
    x = torch.randn(2, 17, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = blocks(x)  # LayerScale and the residual add promote back to the fp32 weights
        cast = run_blocks(blocks, x, torch.bfloat16)
    assert plain.dtype == torch.float32 and cast.dtype == torch.bfloat16
    torch.testing.assert_close(cast.float(), plain, rtol=0.05, atol=0.05)


def test_gradients_reach_the_fp32_weights_in_fp32_and_add_up_over_calls() -> None:
    blocks = _vit().blocks
    x1, x2 = torch.randn(2, 17, 32), torch.randn(3, 5, 32)  # global and local crops: two calls per step
    (blocks(x1).square().mean() + blocks(x2).square().mean()).backward()
    ref = {n: p.grad.clone() for n, p in blocks.named_parameters()}
    blocks.zero_grad(set_to_none=True)
    (
        run_blocks(blocks, x1, torch.bfloat16).float().square().mean()
        + run_blocks(blocks, x2, torch.bfloat16).float().square().mean()
    ).backward()
    for n, p in blocks.named_parameters():
        assert p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32, n
        err = (p.grad - ref[n]).norm() / ref[n].norm().clamp_min(1e-12)
        assert err < 0.05, (n, float(err))


def test_encode_tokens_matches_lightly_encode() -> None:
    enc = MaskedVisionTransformerTIMM(_vit())
    images = torch.randn(2, 3, 16, 16)
    mask = torch.zeros(2, 17, dtype=torch.bool)
    mask[:, 3:7] = True
    ref = enc.encode(images, mask=mask)
    torch.testing.assert_close(encode_tokens(enc, images, mask=mask), ref, rtol=0, atol=0)
    out = encode_tokens(enc, images, mask=mask, dtype=torch.bfloat16)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05)


def test_a_compiled_trunk_compiles_once_for_the_cast_weights() -> None:
    torch._dynamo.reset()
    blocks = _vit().blocks
    blocks.compile()
    before = counters["stats"]["unique_graphs"]
    for _ in range(3):  # fresh cast copies every call: graph inputs, not new graphs
        run_blocks(blocks, torch.randn(2, 17, 32), torch.bfloat16).float().sum().backward()
    assert counters["stats"]["unique_graphs"] - before == 1


def test_cast_weights_refuse_gradient_checkpointing() -> None:
    enc = MaskedVisionTransformerTIMM(_vit())
    enc.set_grad_checkpointing(True)
    with pytest.raises(ValueError, match="does not combine with gradient checkpointing"):
        encode_tokens(enc, torch.randn(2, 3, 16, 16), dtype=torch.bfloat16)
