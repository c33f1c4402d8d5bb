"""Multi-crop augmentation presets, built from lightly's DINO view transforms.

This is the ``pil`` backend (crops made per image in the loader workers); the
``gpu`` backend (:mod:`pipeline.augment.gpu_multicrop`, wired up in
:mod:`pipeline.augment.device`) makes the same recipe on the device from
decoded, resized batches. Both read one :class:`pipeline.config.augment.AugmentConfig`.

``rgb`` is DINO's recipe. ``grayscale`` works on the single-channel image (a
third of the pixel work) with brightness/contrast jitter only, because
saturation, hue and random grayscale do nothing on a gray image, and repeats
the channel to three at the very end so any timm ViT takes it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from lightly.transforms.dino_transform import DINOViewTransform
from PIL import Image

from pipeline.config.augment import AugmentConfig


class _ToThreeChannels:
    """Repeat a 1-channel tensor to 3 channels and normalise each with its own statistics.

    The result equals what an RGB copy of the gray image gets, so features match the eval
    stage's RGB decode (and the ``gpu`` backend, which broadcasts the same way).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.expand(3, -1, -1) - self.mean) / self.std


class MultiCrop:
    """Turn one PIL image into ``global_crops + local_crops`` normalised 3-channel tensors.

    Global crop 1 is always blurred, global crop 2 rarely blurred but sometimes
    solarized, local crops blurred half the time (DINO's asymmetric recipe).
    """

    def __init__(self, spec: AugmentConfig) -> None:
        self.spec = spec
        gray = spec.grayscale
        norm = None if gray else {"mean": list(spec.mean), "std": list(spec.std)}

        def view(size: int, scale: tuple[float, float], blur: float, solarize: float) -> DINOViewTransform:
            return DINOViewTransform(
                crop_size=size,
                crop_scale=(scale[0], scale[1]),  # a tuple, also when Hydra hands a list
                hf_prob=spec.hflip,
                vf_prob=spec.vflip,
                rr_prob=spec.rotate90,  # rr_degrees=None: lightly rotates by exactly 90 degrees
                cj_prob=spec.jitter_prob,
                cj_strength=1.0,
                cj_bright=spec.brightness,
                cj_contrast=spec.contrast,
                cj_sat=0.0 if gray else spec.saturation,
                cj_hue=0.0 if gray else spec.hue,
                random_gray_scale=0.0 if gray else spec.grayscale_prob,
                gaussian_blur=blur,
                solarization_prob=solarize,
                normalize=norm,
            )

        g1 = view(spec.global_size, spec.global_scale, spec.blur, 0.0)
        g2 = view(spec.global_size, spec.global_scale, 0.1 * spec.blur, spec.solarize)
        loc = view(spec.local_size, spec.local_scale, 0.5 * spec.blur, 0.0)
        self.views = [g1 if i % 2 == 0 else g2 for i in range(spec.global_crops)] + [loc] * spec.local_crops
        self.post = _ToThreeChannels(spec.mean, spec.std) if gray else None
        self.mode = "L" if gray else "RGB"

    @property
    def n_views(self) -> int:
        return len(self.views)

    def __call__(self, image: Image.Image) -> list[torch.Tensor]:
        if image.mode != self.mode:
            image = image.convert(self.mode)
        out = [v(image) for v in self.views]
        if self.post is not None:
            out = [self.post(x) for x in out]
        return out


def eval_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable[[Image.Image], torch.Tensor]:
    """Resize the whole image to ``size`` and normalise: the kNN monitor's view of an image."""
    import torchvision.transforms as T

    return T.Compose(
        [
            T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(mean=list(mean), std=list(std)),
        ]
    )
