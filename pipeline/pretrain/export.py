"""Export the trained backbone as ``model.safetensors`` + ``config.json`` that timm and our stages load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from pipeline.core.manifest import atomic_write_json

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
) -> Path:
    """Write the backbone so that both of these load it::

        timm.create_model(architecture, pretrained=True,
                          pretrained_cfg_overlay=dict(file=folder / "model.safetensors"), **model_kwargs)
        create_backbone(BackboneConfig(architecture, weights=str(folder)))

    The classifier is not part of the file (``num_classes: 0`` in ``pretrained_cfg``), so timm
    keeps a fresh head when asked for classes and loads strictly when it is not.
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
    atomic_write_json(folder / "config.json", cfg)
    return folder
