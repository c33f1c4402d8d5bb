"""``torch.compile`` for an SSL method: its ViT trunks and its loss terms.

What is compiled is each ViT's ``blocks`` (the ``nn.Sequential`` of transformer blocks), as one
graph: patch embedding, masking and position-embedding interpolation stay eager, because their
shapes change with the crop size and the iBOT mask, while the blocks see only ``[B, T, D]``.
One graph over all blocks lets the compiler fuse each residual add, layer scale and drop-path
with the next block's LayerNorm, which is where an eager ViT step spends its memory bandwidth.

Compiling block by block instead makes dynamo specialise on every block's drop-path
probability (a Python float that differs per block under the linear decay rule), so a 12-block
student exceeds dynamo's default recompile limit of 8 and silently falls back to eager.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from pipeline.pretrain.methods.base import SSLMethod


def vit_trunks(model: nn.Module) -> list[nn.Module]:
    """The ``blocks`` containers of every timm ViT inside ``model`` (student and teacher)."""
    return [cast(nn.Module, m.blocks) for m in model.modules() if hasattr(m, "blocks") and hasattr(m, "patch_embed")]


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` was called on ``module`` (its calls go through the compiled graph)."""
    return getattr(module, "_compiled_call_impl", None) is not None


def compile_trunks(model: nn.Module, mode: str | None = None) -> int:
    """Compile every ViT trunk of ``model`` in place; returns how many were compiled.

    Each trunk meets at most a few input shapes (global and local crops, train and eval), and
    dynamo's automatic dynamic shapes cover changing batch sizes, so the recompile limit is
    raised only enough for those variants.
    """
    trunks = vit_trunks(model)
    if not trunks:
        raise ValueError("compile: no timm ViT (a module with .blocks and .patch_embed) found to compile")
    cfg = torch._dynamo.config  # noqa: SLF001 - where torch.compile keeps its limits
    cfg.recompile_limit = max(cfg.recompile_limit, 64)
    for t in trunks:
        t.compile(mode=mode)
    return len(trunks)


def compile_method(method: SSLMethod, mode: str | None = None) -> int:
    """Compile the ViT trunks (:func:`compile_trunks`) and the method's loss terms; returns the trunk count.

    The loss terms matter on a GPU: DINOv2's heads score every crop and every masked patch
    against 65,536 prototypes, and the eager losses make several float32 passes over those
    scores (``SelfDistillation.compile_losses``).
    """
    n = compile_trunks(method, mode)
    method.compile_losses(mode)  # a no-op hook on SSLMethod; SelfDistillation compiles its DINO and iBOT terms
    return n


def quiet_tensor_copy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` without torch's "To copy construct from a tensor" warning.

    lightly's losses call ``torch.tensor(teacher_temp)``; compiled loss terms pass the temperature
    as a tensor (a Python float would be baked into the graph and recompiled at every new value of
    the warm-up schedule), which torch warns about at every trace.
    """

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To copy construct from a tensor")
            return fn(*args, **kwargs)

    return call
