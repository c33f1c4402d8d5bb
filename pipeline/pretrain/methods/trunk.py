"""Running a ViT's transformer blocks with low-precision compute weights and fp32 master weights.

Under plain bf16 autocast every matrix product runs in bf16, but the residual stream stays
float32: each block's LayerScale (``x * gamma``) and residual add promote back to the fp32
parameters' dtype, so every LayerNorm, residual add and drop-path reads and writes 4 bytes
per value. On a GPU those memory-bound kernels take as long as the matrix products
(docs/pretraining.md, "GPU throughput"). DINOv2 keeps the stream in low precision with FSDP's
``MixedPrecision(param_dtype=...)``: the sharded fp32 weights are cast once per forward, the
blocks compute with the cast copies, and gradients come back in fp32.

:func:`run_blocks` does the same without FSDP: the blocks are called through
:func:`torch.func.functional_call` with every parameter cast to ``dtype``. The cast is part of
the autograd graph, so gradients reach the fp32 parameters as fp32 (accumulated in fp32 when
one step calls the blocks more than once, as global and local crops do), and the optimizer,
the EMA teacher, checkpoints and the export never see a bf16 tensor. Autocast stays on, so
LayerNorm and softmax still compute in fp32 internally, as they do in DINOv2.
"""

from __future__ import annotations

import torch
from lightly.models.modules.masked_vision_transformer_timm import MaskedVisionTransformerTIMM
from torch import nn
from torch.func import functional_call

PARAM_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


def param_dtype(name: str) -> torch.dtype | None:
    """``"float32"`` (the parameters as they are) -> ``None``; ``"bfloat16"`` -> ``torch.bfloat16``."""
    if name not in PARAM_DTYPES:
        raise ValueError(f"pretrain.method.param_dtype={name!r}; expected one of {tuple(PARAM_DTYPES)}")
    return PARAM_DTYPES[name]


def run_blocks(blocks: nn.Module, tokens: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``blocks(tokens)``, computed with parameters and tokens cast to ``dtype`` (``None``: as they are).

    A compiled ``blocks`` (``pipeline.pretrain.compile``) stays compiled: the cast copies are
    graph inputs like the parameters they replace, so they cost no recompilation.
    """
    if dtype is None:
        return blocks(tokens)
    params = {name: p.to(dtype) for name, p in blocks.named_parameters()}
    return functional_call(blocks, params, (tokens.to(dtype),))


def encode_tokens(
    encoder: MaskedVisionTransformerTIMM,
    images: torch.Tensor,
    mask: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``encoder.encode(images, mask=mask)`` with the blocks run by :func:`run_blocks`.

    Patch embedding, masking, position embeddings and the final norm keep the parameters' own
    dtype (they are a small part of the work); the normed tokens come back in that dtype too.
    Cast weights and lightly's gradient checkpointing do not combine: that is an error, not a
    silent fall-back to either.
    """
    if dtype is None:
        return encoder.encode(images, mask=mask)
    if encoder.grad_checkpointing:
        raise ValueError("pretrain.method.param_dtype=bfloat16 does not combine with gradient checkpointing")
    vit = encoder.vit
    tokens = vit.norm_pre(encoder.preprocess(images, mask=mask))
    out = run_blocks(vit.blocks, tokens, dtype)
    return vit.norm(out.to(tokens.dtype))
