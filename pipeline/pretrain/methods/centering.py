"""Teacher targets for the DINO and iBOT losses: softmax centering or Sinkhorn-Knopp.

``softmax`` is DINO's recipe: ``softmax((t - center) / T)`` with an EMA ``center`` of past
teacher outputs. At small batches (tens of images, as on a CPU) the center follows the batch
closely and the targets drift to uniform: the teacher collapses (docs/pretraining.md).
``sinkhorn`` is what DINOv2 ships (``centering: sinkhorn_knopp``, after SwAV): three
Sinkhorn-Knopp iterations rescale ``exp(t / T)`` so that every prototype gets an equal share
of the batch and every image one unit of mass, so one prototype cannot take every image. It
does not stop uniform targets: when the teacher gives every image the same output, the
balanced answer is uniform for each (on the ELPV demo both centerings go that way).

Both feed lightly's own ``DINOLoss`` / ``IBOTPatchLoss`` (so the cross-entropy and the iBOT
per-image weighting stay lightly's): Sinkhorn targets go in as log-probabilities at
temperature 1 against a center that never moves (``center_momentum=1``, zero forever).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.loss.msn_loss import sinkhorn

CENTERINGS = ("softmax", "sinkhorn")


@torch.no_grad()
def sinkhorn_knopp_targets(teacher_out: torch.Tensor, temp: float | torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """DINOv2's ``sinkhorn_knopp_teacher``: balanced soft assignments of ``(N, K)`` logits.

    Rows of the result sum to 1. Under DDP the normalising sums are all-reduced, as in DINOv2,
    so the balance holds over the global batch.

    Unlike DINOv2's ``exp(t / T)``, the exponent is shifted by the largest logit of the global
    batch (the first normalisation cancels any shared shift), and underflowed entries are
    raised to the smallest normal float: at ``T = 0.01`` the original overflows, and without
    the floor a prototype whose every entry underflows divides by zero.
    """
    logits = teacher_out.float() / temp
    shift = logits.max()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    probs = torch.exp(logits - shift).clamp_min(torch.finfo(torch.float32).tiny)
    return sinkhorn(probs, iterations=iterations, gather_distributed=True)


def as_logits(targets: torch.Tensor) -> torch.Tensor:
    """Probabilities as logits whose softmax at temperature 1 gives them back (zeros stay zero)."""
    return targets.clamp_min(torch.finfo(targets.dtype).tiny).log()


def target_probs(
    teacher_out: torch.Tensor, center: torch.Tensor, temp: float | torch.Tensor, centering: str
) -> torch.Tensor:
    """The ``(N, K)`` targets of the DINO loss, for the loss and its diagnostics (no center update)."""
    if centering == "sinkhorn":
        return sinkhorn_knopp_targets(teacher_out, temp)
    return F.softmax((teacher_out.float() - center.reshape(1, -1)) / temp, dim=-1)


def check_centering(centering: str) -> None:
    if centering not in CENTERINGS:
        raise ValueError(f"pretrain.method.centering={centering!r}; expected one of {CENTERINGS}")
