"""[CLS]-only encoding of a timm ViT: the last block computes the class token alone.

DINO's image-level loss (and KoLeo) read only the final [CLS] token, yet a plain
forward pass pushes every patch token through the last block's attention output,
projection and MLP too. Those patch outputs are thrown away; skipping them removes
about 1/depth of the forward and backward cost (8 % of a DINO step on ViT-Tiny/16,
2x224 + 6x96, measured in ``benchmarks/results/lightlytrain_compare.md``). The maths is
unchanged: the last block's keys and values still come from all tokens, only the
query and everything after the attention are restricted to the class token.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from lightly.models.modules.masked_vision_transformer_timm import MaskedVisionTransformerTIMM
from timm.layers import Attention
from timm.models.vision_transformer import Block
from torch import nn

from pipeline.pretrain.compile import is_compiled
from pipeline.pretrain.methods.trunk import encode_tokens


def supports_cls_only(block: nn.Module) -> bool:
    """Whether :func:`cls_block_forward` reproduces ``block`` exactly.

    Only timm's plain pre-norm ``Block`` with the standard ``Attention`` (no gate); FSDP- or
    otherwise-wrapped blocks, rope and parallel blocks take the ordinary path.
    """
    return type(block) is Block and type(block.attn) is Attention and block.attn.gate is None


def cls_block_forward(block: Block, x: torch.Tensor) -> torch.Tensor:
    """``block(x)[:, :1]`` computed without the patch tokens' outputs.

    Args:
        block: A timm ``Block`` (see :func:`supports_cls_only`).
        x: Tokens ``(B, N, C)`` with the class token first.

    Returns:
        The class token after the block, ``(B, 1, C)``.
    """
    attn = cast(Attention, block.attn)  # supports_cls_only checked the type
    b, n, _ = x.shape
    h, d, dim = attn.num_heads, attn.head_dim, attn.attn_dim
    y = block.norm1(x)
    w, bias = attn.qkv.weight, attn.qkv.bias
    # one projection for K,V of all tokens, a small one for the class token's query
    kv = F.linear(y, w[dim:], None if bias is None else bias[dim:]).reshape(b, n, 2, h, d).permute(2, 0, 3, 1, 4)
    q = F.linear(y[:, :1], w[:dim], None if bias is None else bias[:dim]).reshape(b, 1, h, d).transpose(1, 2)
    k, v = kv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    if attn.fused_attn:
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0)
    else:
        a = (q * attn.scale) @ k.transpose(-2, -1)
        o = attn.attn_drop(a.softmax(dim=-1)) @ v
    o = attn.proj_drop(attn.proj(attn.norm(o.transpose(1, 2).reshape(b, 1, dim))))
    cls = x[:, :1] + block.drop_path1(block.ls1(o))
    return cls + block.drop_path2(block.ls2(block.mlp(block.norm2(cls))))


def encode_cls(
    encoder: MaskedVisionTransformerTIMM, images: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The normed [CLS] features ``encoder.encode(images)[:, 0]``, skipping the unused patch outputs.

    Falls back to the full forward pass when the last block is not a plain timm ``Block``,
    gradient checkpointing is on, the trunk is compiled (``pipeline.pretrain.compile``) or it
    computes with cast weights (``dtype``, :mod:`pipeline.pretrain.methods.trunk`): a compiled
    trunk fuses across blocks, which is worth more than skipping the patch tokens' last block,
    and iterating its blocks here would bypass the compiled graph.
    """
    vit = encoder.vit
    blocks = vit.blocks
    last = blocks[-1] if len(blocks) else None
    compiled = is_compiled(blocks)
    plain = last is not None and supports_cls_only(last) and vit.num_prefix_tokens >= 1
    if not plain or compiled or encoder.grad_checkpointing or dtype is not None:
        return encode_tokens(encoder, images, dtype=dtype)[:, 0]
    tokens = vit.norm_pre(encoder.preprocess(images))
    for blk in blocks[:-1]:
        tokens = blk(tokens)
    assert last is not None  # plain
    return vit.norm(cls_block_forward(last, tokens))[:, 0]
