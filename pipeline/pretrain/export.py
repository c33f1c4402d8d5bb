"""Export the trained backbone as ``model.safetensors`` + ``config.json`` that timm and our stages load,
and optionally as ``backbone.onnx`` for deployment (:mod:`pipeline.pretrain.onnx_export`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from pipeline.core.manifest import atomic_write_json
from pipeline.pretrain.onnx_export import export_onnx

log = logging.getLogger(__name__)
WEIGHTS = "model.safetensors"


def export_backbone(
    model: nn.Module,
    folder: Path,
    architecture: str,
    model_kwargs: dict[str, Any],
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    extra: dict[str, Any] | None = None,
    onnx: bool = False,
) -> Path:
    """Write the backbone so that both of these load it::

        timm.create_model(architecture, pretrained=True,
                          pretrained_cfg_overlay=dict(file=folder / "model.safetensors"), **model_kwargs)
        create_backbone(BackboneConfig(architecture, weights=str(folder)))

    The classifier is not part of the file (``num_classes: 0`` in ``pretrained_cfg``), so timm
    keeps a fresh head when asked for classes and loads strictly when it is not.

    With ``onnx``, ``backbone.onnx`` (pooled features, dynamic batch axis) is written too and
    checked against the PyTorch model with onnxruntime; ``config.json`` records the outcome under
    ``"onnx"`` (file, exporter, largest difference, or the error). A model that does not export
    gets a warning and no ONNX file; the safetensors export is written either way.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    own = getattr(model, "pretrained_cfg", None) or {}  # a CNN's first conv and classifier are not a ViT's
    save_file(sd, str(folder / WEIGHTS), metadata={"architecture": architecture})
    pretrained_cfg = {
        "architecture": architecture,
        "input_size": [3, input_size, input_size],
        "mean": list(mean),
        "std": list(std),
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "num_classes": 0,
        "classifier": own.get("classifier", "head"),
        "first_conv": own.get("first_conv", "patch_embed.proj"),
        "license": "same as the training data",
    }
    cfg = {
        "architecture": architecture,
        # num_classes=0: `timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=...),
        # **model_kwargs)` then builds exactly the saved (headless) model and loads it strictly
        "model_kwargs": {**model_kwargs, "num_classes": 0},
        "weights": WEIGHTS,
        "num_features": int(getattr(model, "num_features", 0)),
        "pretrained_cfg": pretrained_cfg,
        **(extra or {}),
    }
    if onnx:
        done = export_onnx(model, folder, input_size, in_chans=int(model_kwargs.get("in_chans", 3)))
        cfg["onnx"] = done.as_dict()
        if done.error:
            log.warning("export: no %s for %s (safetensors written): %s", "backbone.onnx", architecture, done.error)
        elif done.fallback_reason:
            # TorchScript traces one path through the model; the parity check covers only its random batch
            log.warning("export: %s written by the TorchScript fall-back: %s", "backbone.onnx", done.fallback_reason)
    atomic_write_json(folder / "config.json", cfg)
    return folder
