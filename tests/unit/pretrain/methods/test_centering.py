"""Sinkhorn-Knopp teacher centering against DINOv2's own code, and its wiring into lightly's losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import DINOLoss, IBOTPatchLoss

from pipeline.pretrain.methods.centering import as_logits, check_centering, sinkhorn_knopp_targets, target_probs
from pipeline.pretrain.methods.self_distillation import target_entropy
from tests.unit.pretrain_tiny import tiny_vit


def dinov2_sinkhorn_knopp_teacher(
    teacher_output: torch.Tensor, teacher_temp: float, n_iterations: int = 3
) -> torch.Tensor:
    """facebookresearch/dinov2, dinov2/loss/dino_clstoken_loss.py, one process (the all-reduces dropped)."""
    teacher_output = teacher_output.float()
    Q = torch.exp(teacher_output / teacher_temp).t()  # the original's names (Q, B, K)
    B = Q.shape[1]
    K = Q.shape[0]
    sum_Q = torch.sum(Q)
    Q /= sum_Q
    for _ in range(n_iterations):
        sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
        Q /= sum_of_rows
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def cosine_logits(n: int, k: int, seed: int = 0) -> torch.Tensor:
    """What lightly's DINO head outputs: cosines of normalised features and unit prototypes."""
    g = torch.Generator().manual_seed(seed)
    x = F.normalize(torch.randn(n, 32, generator=g), dim=-1)
    w = F.normalize(torch.randn(k, 32, generator=g), dim=-1)
    return x @ w.T


@pytest.mark.parametrize("temp", [0.04, 0.07])
def test_sinkhorn_targets_match_dinov2(temp: float) -> None:
    t = cosine_logits(48, 256)
    ours = sinkhorn_knopp_targets(t, temp)
    ref = dinov2_sinkhorn_knopp_teacher(t, temp)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours.sum(1), torch.ones(48))
    # balanced: every prototype gets about N/K of the mass (exactly so after infinitely many iterations)
    assert ours.sum(0).std() / ours.sum(0).mean() < 0.2


def test_sinkhorn_targets_stay_finite_at_very_low_temperatures() -> None:
    t = cosine_logits(32, 256)
    t[:, 7] = -1.0  # a prototype every image is far from: exp underflows in its whole column
    for temp in (0.01, 0.005):
        q = sinkhorn_knopp_targets(t, temp)
        assert torch.isfinite(q).all()
        torch.testing.assert_close(q.sum(1), torch.ones(32))
    assert not torch.isfinite(dinov2_sinkhorn_knopp_teacher(t, 0.005)).all()  # the original overflows


def test_sinkhorn_targets_cannot_be_dominated_by_one_prototype() -> None:
    # every image's logits favour prototype 0: softmax centering at step 0 (zero center) puts
    # nearly all mass there; Sinkhorn spreads the batch over the prototypes instead
    t = cosine_logits(64, 128) * 0.2
    t[:, 0] = 0.9
    soft = target_probs(t, torch.zeros(128), 0.04, "softmax")
    sk = target_probs(t, torch.zeros(128), 0.04, "sinkhorn")
    assert soft[:, 0].mean() > 0.9
    assert sk[:, 0].mean() < 0.05
    _, batch = target_entropy(t, torch.zeros(128), 0.04, "sinkhorn")
    assert batch > 0.95


def test_lightly_losses_take_sinkhorn_targets_as_logits_at_temperature_one() -> None:
    k, n = 64, 8
    t, s = cosine_logits(2 * n, k, 1), torch.randn(2 * n, k)
    q = sinkhorn_knopp_targets(t, 0.05)
    dino = DINOLoss(k, student_temp=0.1, center_momentum=1.0)
    got = dino(teacher_out=list(as_logits(q).chunk(2)), student_out=list(s.chunk(2)), teacher_temp=1.0)
    logp = F.log_softmax(s / 0.1, dim=-1).chunk(2)
    qa, qb = q.chunk(2)
    want = -((qa * logp[1]).sum(-1).mean() + (qb * logp[0]).sum(-1).mean()) / 2  # cross-view pairs only
    torch.testing.assert_close(got, want)
    assert torch.all(dino.center == 0)  # momentum 1: the center never moves

    ibot = IBOTPatchLoss(k, student_temp=0.1, center_momentum=1.0)
    mask = torch.zeros(2, 2, 4, dtype=torch.bool)
    mask[0, 0, :3] = True
    mask[1, 1, :] = True  # 3 + 4 masked patches
    tp, sp = cosine_logits(7, k, 2), torch.randn(7, k)
    qp = sinkhorn_knopp_targets(tp, 0.05)
    got = ibot(teacher_out=as_logits(qp), student_out=sp, mask=mask, teacher_temp=1.0)
    ce = -(qp * F.log_softmax(sp / 0.1, dim=-1)).sum(-1)
    want = (ce[:3].sum() / 3 + ce[3:].sum() / 4) / 2
    torch.testing.assert_close(got, want)
    for _ in range(3):
        ibot(teacher_out=as_logits(qp), student_out=sp, mask=mask, teacher_temp=1.0)
    torch.testing.assert_close(got, ibot(teacher_out=as_logits(qp), student_out=sp, mask=mask, teacher_temp=1.0))


def test_unknown_centering_names_the_key() -> None:
    with pytest.raises(ValueError, match=r"pretrain\.method\.centering"):
        check_centering("sinkhorn_knopp")


def test_distillation_trains_on_sinkhorn_targets_when_asked() -> None:

    from pipeline.config.pretrain import MethodConfig
    from pipeline.pretrain.methods import SelfDistillation, StepInputs
    from pipeline.pretrain.methods.cls_encoder import encode_cls

    torch.manual_seed(0)
    vit = tiny_vit()
    spec = MethodConfig(
        dino_weight=1.0,
        ibot_weight=0.0,
        koleo_weight=0.0,
        out_dim=64,
        hidden_dim=32,
        bottleneck_dim=16,
        centering="sinkhorn",
    )
    m = SelfDistillation(vit, spec).train()
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(6, 3, 16, 16, generator=g) for _ in range(2)] + [torch.randn(6, 3, 8, 8, generator=g)]
    _, parts = m.loss(views, StepInputs(teacher_temp=0.05, n_global=2))

    with torch.no_grad():  # DINOv2's targets over both global crops, every cross-view pair
        q = dinov2_sinkhorn_knopp_teacher(m.teacher_head(encode_cls(m.teacher, torch.cat(views[:2]))), 0.05).chunk(2)
        s = [m.student_head(encode_cls(m.student, v)) for v in (torch.cat(views[:2]), views[2])]
        logp = F.log_softmax(torch.cat(s) / spec.student_temp, dim=-1).chunk(3)
    pairs = [(i, j) for i in range(2) for j in range(3) if i != j]
    want = sum(-(q[i] * logp[j]).sum(-1).mean() for i, j in pairs) / len(pairs)
    torch.testing.assert_close(parts["dino"], want, rtol=1e-4, atol=1e-5)
    assert torch.all(m.dino_loss.center == 0)
    assert m.diagnostics()["teacher_batch_entropy"] > 0.99  # the diagnostics read the balanced targets
