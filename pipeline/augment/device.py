"""Which backend makes the crops: what the loader workers apply, and what the module applies on the device.

``pil`` (default): the workers run the whole recipe per image (:class:`pipeline.augment.pil_multicrop.MultiCrop`).
With ``pretrain.augment.backend=gpu`` (``pretrain/augment=gpu``) the loader
workers only decode each image and fit it to a fixed ``load_size`` square
(:class:`DecodeResize`, a few ms per image instead of ~40 ms for the PIL
recipe), and batches travel as ``uint8 [B, C, S, S]`` (pinned on GPU runs: about a
tenth of the bytes of the float views of 2x224 + 8x96 crops). The module runs
:class:`pipeline.augment.gpu_multicrop.GPUMultiCrop` on the device (:func:`device_multicrop`),
seeded per batch from the loader, so a resumed run makes the same views.

Difference from the ``pil`` backend: crops are drawn from the centre
``load_size`` square of the image (short side resized to ``load_size``), not
from the full original, so the far ends of non-square images are never seen
and crop scales are relative to the square.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps

from pipeline.augment.gpu_multicrop import GPUMultiCrop
from pipeline.augment.pil_multicrop import MultiCrop
from pipeline.config.augment import AugmentConfig


def load_size(spec: AugmentConfig) -> int:
    """``spec.load_size``, or 8/7 of the global crop size when 0 (256 for 224, DINO's resize ratio)."""
    return spec.load_size or max(spec.global_size, round(spec.global_size * 8 / 7))


class DecodeResize:
    """PIL image -> ``uint8 [C, S, S]``: short side resized to ``S`` (bicubic, antialiased), centre-cropped.

    ``C`` is 1 for the grayscale preset (crops and jitter then touch a third of the
    pixels; the normalisation broadcasts to 3 channels) and 3 for rgb.
    """

    def __init__(self, size: int, grayscale: bool) -> None:
        self.size = size
        self.mode = "L" if grayscale else "RGB"
        self.draft = (self.mode, size)  # lets the loader decode large JPEGs at a reduced scale (see data.decode)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if image.mode != self.mode:
            image = image.convert(self.mode)
        if image.size != (self.size, self.size):
            image = ImageOps.fit(image, (self.size, self.size), method=Image.Resampling.BICUBIC)
        arr = np.array(image, dtype=np.uint8)  # a writable copy: torch warns on PIL's read-only buffer
        t = torch.from_numpy(arr)
        return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def loader_transform(spec: AugmentConfig) -> MultiCrop | DecodeResize:
    """What the loader workers apply per image: the full PIL recipe, or decode-and-resize only."""
    if spec.backend == "gpu":
        return DecodeResize(load_size(spec), spec.grayscale)
    return MultiCrop(spec)


def device_multicrop(spec: AugmentConfig) -> GPUMultiCrop | None:
    """The module-side multi-crop of the ``gpu`` backend (``None`` for ``pil``).

    Views come out in float32, as the PIL path's; under ``bf16-mixed`` autocast casts them
    inside the model, and true half precision converts them in the module's hook.
    """
    if spec.backend != "gpu":
        return None
    return GPUMultiCrop(spec)
