"""L2-SP (Li, Grandvalet and Davoine, ICML 2018): pull fine-tuned weights towards the starting point.

Plain weight decay pulls a warm-started backbone towards zero, which for generic weights means
away from what made them worth starting from; L2-SP penalises the distance to the starting
weights instead, ``weight / 2 * sum ||w - w0||^2``. The anchors are non-persistent buffers: they
move with the module between devices but are not part of checkpoints, since a resumed run
rebuilds the same starting weights from ``pretrain.model.weights`` before loading its checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn


class L2SP(nn.Module):
    """The penalty towards ``model``'s parameters as they are now.

    Args:
        model: The backbone at its starting weights.
        weight: The coefficient (``pretrain.optim.l2sp_weight``).
    """

    def __init__(self, model: nn.Module, weight: float) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"pretrain.optim.l2sp_weight={weight}; expected >= 0")
        self.weight = weight
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        for i, (_, p) in enumerate((n, p) for n, p in model.named_parameters() if p.requires_grad):
            self.register_buffer(f"anchor_{i}", p.detach().clone(), persistent=False)

    def forward(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        anchors = [getattr(self, f"anchor_{i}") for i in range(len(self.names))]
        current = [params[n] for n in self.names]
        sq = sum(((p - a.to(p.dtype)) ** 2).sum() for p, a in zip(current, anchors))
        return 0.5 * self.weight * torch.as_tensor(sq)
