"""The export loads through timm's pretrained_cfg_overlay and through create_backbone, identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from omegaconf import OmegaConf

from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import create_backbone
from pipeline.pretrain.backbone_init import build_vit, model_kwargs_of
from pipeline.pretrain.export import export_backbone

MODEL = OmegaConf.create(
    {
        "name": "vit_tiny_patch16_224",
        "patch_size": 8,
        "weights": None,
        "drop_path_rate": 0.0,
        "kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2},
    }
)


def test_export_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vit, kw = build_vit(MODEL, 32)
    assert kw == model_kwargs_of(MODEL, 32) and kw["patch_size"] == 8 and kw["img_size"] == 32
    folder = export_backbone(vit, tmp_path / "export", MODEL.name, kw, 32, (0.5,) * 3, (0.25,) * 3)
    x = torch.randn(2, 3, 32, 32)
    ref = vit.eval()(x)

    exported = json.loads((folder / "config.json").read_text())
    assert exported["model_kwargs"] == {**kw, "num_classes": 0}
    # exactly the documented call, with the recorded model_kwargs
    via_timm = timm.create_model(
        exported["architecture"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")),
        **exported["model_kwargs"],
    ).eval()
    assert torch.allclose(via_timm(x), ref, atol=1e-6)
    assert via_timm.pretrained_cfg["mean"] == (0.5,) * 3 or list(via_timm.pretrained_cfg["mean"]) == [0.5] * 3
    # asking timm for a classifier keeps our backbone and adds a fresh head
    with_head = timm.create_model(
        MODEL.name,
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(folder / "model.safetensors")),
        **{**exported["model_kwargs"], "num_classes": 3},
    )
    assert torch.equal(with_head.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)

    via_ours = create_backbone(BackboneConfig(MODEL.name, weights=str(folder))).eval()
    assert torch.allclose(via_ours(x), ref, atol=1e-6)


def test_continued_pretraining_resamples_position_embedding(tmp_path: Path) -> None:
    torch.manual_seed(0)
    vit, kw = build_vit(MODEL, 32)
    folder = export_backbone(vit, tmp_path / "export", MODEL.name, kw, 32, (0.5,) * 3, (0.25,) * 3)
    cont = OmegaConf.merge(MODEL, {"weights": str(folder)})
    vit48, _kw48 = build_vit(cont, 48)  # 6x6 grid from a 4x4 one
    assert vit48.pos_embed.shape[1] == 1 + 36
    assert torch.equal(vit48.blocks[1].mlp.fc2.weight, vit.blocks[1].mlp.fc2.weight)
    bad = OmegaConf.merge(MODEL, {"weights": str(folder), "kwargs": {"depth": 3}})
    with pytest.raises(ValueError, match="do not fit"):
        build_vit(bad, 32)


def test_cnn_export_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cnn = timm.create_model("resnet10t", num_classes=0).eval()
    folder = export_backbone(cnn, tmp_path / "export", "resnet10t", {}, 64, (0.5,) * 3, (0.5,) * 3)
    cfg = json.loads((folder / "config.json").read_text())["pretrained_cfg"]
    assert (cfg["first_conv"], cfg["classifier"]) == ("conv1.0", "fc")  # the CNN's own, not a ViT's
    x = torch.randn(2, 3, 64, 64)
    via_ours = create_backbone(BackboneConfig("resnet10t", weights=str(folder))).eval()
    assert torch.allclose(via_ours(x), cnn(x), atol=1e-6)
