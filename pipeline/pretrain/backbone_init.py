"""Build the ViT to pretrain through timm, optionally from existing weights (continued pretraining)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import create_backbone, load_matching, load_state_dict, read_export

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
