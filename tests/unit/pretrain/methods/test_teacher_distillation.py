"""Distillation from a frozen teacher: LightlyTrain's loss values, CNN and ViT students, a frozen teacher,
and pairs that cannot be matched fail before training with the key to change."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config.pretrain import DistillationConfig
from pipeline.pretrain.methods import Distillation, StepInputs
from pipeline.pretrain.methods.teacher_distillation import (
    auto_queue_size,
    dense_loss,
    global_loss,
    pooled_and_map,
)
from tests.unit.pretrain_tiny import tiny_vit


def _unit(g: torch.Generator, *shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


@pytest.mark.parametrize(("t_global", "t_local", "want_global", "want_dense"), [
    (0.07, 0.07, 4.833913803100586, 0.030397549271583557),
    (0.2, 0.5, 1.195044994354248, 0.19552448391914368),
])  # fmt: skip
def test_losses_match_lightly_train(t_global: float, t_local: float, want_global: float, want_dense: float) -> None:
    # The values: LightlyTrain 0.17.0's DistillationV3Loss(t_global, t_local) on these same tensors
    # (teacher_global, teacher_local, student_global, student_local, queue)
    g = torch.Generator().manual_seed(0)
    tg, sg, q, tl, sl = _unit(g, 4, 8), _unit(g, 4, 8), _unit(g, 6, 8), _unit(g, 4, 5, 8), _unit(g, 4, 5, 8)
    assert global_loss(sg, tg, q, t_global).item() == pytest.approx(want_global, rel=1e-5)
    assert dense_loss(sl, tl, t_local).item() == pytest.approx(want_dense, rel=1e-5)
    assert global_loss(tg, tg, q, t_global).item() == pytest.approx(0.0, abs=1e-6)  # the student matches: no loss


def test_auto_queue_size_follows_lightly_train_buckets() -> None:
    assert [auto_queue_size(n) for n in (10, 50, 249, 250, 1200, 2624, 15_000, 10**6)] == [
        16,
        32,
        64,
        128,
        512,
        1024,
        4096,
        8192,
    ]


def _cnn() -> nn.Module:
    return timm.create_model("test_efficientnet", num_classes=0)


def _vit8() -> nn.Module:
    """A 2-block ViT with 8 px patches: an 8x8 grid at 64 px."""
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=64, patch_size=8, depth=2, embed_dim=32, num_heads=2, num_classes=0,
        dynamic_img_size=True,
    )  # fmt: skip


def _views(size: int, b: int = 4, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 3, size, size, generator=g) for _ in range(2)] + [
        torch.randn(b, 3, size // 2, size // 2, generator=g) for _ in range(2)
    ]


def test_feature_maps_of_vit_and_cnn() -> None:
    vit = tiny_vit().eval()
    x = torch.randn(2, 3, 32, 24)
    pooled, fmap = pooled_and_map(vit, x)
    assert fmap.shape == (2, 32, 8, 6)  # patch 4; the class token is not on the grid
    assert torch.allclose(pooled, vit(x), atol=1e-6)
    tokens = vit.forward_features(x)
    assert torch.equal(fmap[:, :, 2, 3], tokens[:, 1 + 2 * 6 + 3])  # row-major patch order
    cnn = _cnn().eval()
    pooled, fmap = pooled_and_map(cnn, torch.randn(2, 3, 32, 32))
    assert pooled.shape == (2, cnn.num_features) and fmap.shape[:2] == (2, cnn.num_features)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(pooled_and_map(cnn, x)[0], cnn(x), atol=1e-6)  # the pooled features are timm's


@pytest.mark.parametrize(
    ("student", "teacher", "crops", "size"),
    [(_cnn, _vit8, "global", 64), (_vit8, _cnn, "all", 128)],
    ids=["cnn-student-vit-teacher", "vit-student-cnn-teacher-all-crops"],
)
def test_steps_train_the_student_only_and_the_loss_falls(student, teacher, crops: str, size: int) -> None:
    # test_efficientnet has stride 32: a 2x2 map at 64 px, the least the dense loss can learn from
    torch.manual_seed(0)
    spec = DistillationConfig(crops=crops, mixup=False)  # a fixed batch: the same input every step
    sizes = (size,) if crops == "global" else (size, size // 2)
    m = Distillation(student(), teacher(), spec, crop_sizes=sizes, n_images=40)
    assert m.queue.shape[0] == 16  # auto: 40 images
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    student_before = [p.detach().clone() for p in m.student.parameters()]
    opt = torch.optim.AdamW([p for mod in m.trainable_modules() for p in mod.parameters()], lr=1e-3)
    views = _views(size)
    losses = []
    m.train()
    assert not m.teacher.training  # BatchNorm statistics and dropout of the teacher stay frozen
    for _ in range(8):
        loss, parts = m.loss(views, StepInputs(teacher_temp=0.0, n_global=2))
        assert set(parts) == {"global", "dense"} and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None and not p.requires_grad for p in m.teacher.parameters())
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    after = m.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics included
    assert any(not torch.equal(a, b) for a, b in zip(student_before, m.student.parameters()))
    assert m.export_backbone() is m.student
    assert "student_teacher_cos" in m.diagnostics()


def test_queue_is_fifo_newest_first() -> None:
    torch.manual_seed(0)
    m = Distillation(tiny_vit(), tiny_vit(), DistillationConfig(queue_size=5), crop_sizes=(16,), n_images=40)
    a, b = torch.full((3, 32), 1.0), torch.full((3, 32), 2.0)
    m._push(a)
    m._push(b)
    assert m.queue[:, 0].tolist() == [2.0, 2.0, 2.0, 1.0, 1.0]
    m._push(torch.full((7, 32), 3.0))  # a batch larger than the queue fills it
    assert m.queue[:, 0].tolist() == [3.0] * 5


def test_teacher_inputs_are_renormalised() -> None:
    torch.manual_seed(0)
    m = Distillation(
        tiny_vit(),
        tiny_vit(),
        DistillationConfig(),
        crop_sizes=(16,),
        n_images=40,
        view_norm=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        teacher_norm=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    )
    pixels = torch.rand(1, 3, 4, 4)
    view = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    assert torch.allclose(view * m.t_scale + m.t_shift, (pixels - 0.5) / 0.5, atol=1e-6)


def test_pairs_that_cannot_be_matched_name_the_key() -> None:
    spec = DistillationConfig()
    gray = timm.create_model("test_efficientnet", num_classes=0, in_chans=1)
    with pytest.raises(ValueError, match=r"pretrain\.method\.teacher takes 1-channel"):
        Distillation(_cnn(), gray, spec, crop_sizes=(64,), n_images=40)
    fixed = timm.create_model(  # a ViT teacher fixed at 32 px cannot see the 16 px local crops
        "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2, num_classes=0
    )
    with pytest.raises(ValueError, match=r"pretrain\.method\.teacher \(VisionTransformer\).*16 px"):
        Distillation(_vit8(), fixed, spec, crop_sizes=(32, 16), n_images=40)
    with pytest.raises(ValueError, match=r"pretrain\.method\.queue_size=64"):
        Distillation(_cnn(), _cnn(), DistillationConfig(queue_size=64), crop_sizes=(64,), n_images=40)
    with pytest.raises(ValueError, match=r"1 feature-map position.*local_weight=0"):  # stride 32 at 32 px: 1x1
        Distillation(_vit8(), _cnn(), spec, crop_sizes=(32,), n_images=40)
    Distillation(_vit8(), _cnn(), DistillationConfig(local_weight=0.0), crop_sizes=(32,), n_images=40)
    with pytest.raises(ValueError, match=r"pretrain\.method\.crops"):
        Distillation(_cnn(), _cnn(), DistillationConfig(crops="local"), crop_sizes=(64,), n_images=40)
