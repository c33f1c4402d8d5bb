"""The multi-crop augmentation recipe (``conf/pretrain/augment/``), read by both backends in :mod:`pipeline.augment`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hydra.core.config_store import ConfigStore

PRESETS = ("rgb", "grayscale")
BACKENDS = ("pil", "gpu")


@dataclass
class AugmentConfig:
    """Multi-crop augmentation: DINO's recipe, made per image (``pil``) or per batch on the device (``gpu``).

    Attributes:
        preset: ``rgb``, ``grayscale`` or ``auto`` (the stage picks ``grayscale`` when at least 90 %
            of the training images are mode L; :func:`resolve_preset`). ``grayscale`` makes the crops
            on the single-channel image, repeats it to 3 channels at the end, and ignores
            ``saturation``, ``hue`` and ``grayscale_prob`` (meaningless on gray data).
        global_crops: Number of global crops (2 for the distillation methods and SimCLR).
        local_crops: Number of local crops (0 turns multi-crop off; DINOv2 uses 8).
        global_size / local_size: Crop sizes in pixels.
        global_scale / local_scale: RandomResizedCrop area ranges (aspect ratio 3/4 to 4/3).
        hflip / vflip: Flip probabilities (vertical flips suit e.g. solar cells, not street scenes).
        rotate90: Probability of a counter-clockwise quarter turn after the flips; at 0.5 with both
            flips every view is one of the 8 symmetries of a square. It pays for domains without an
            orientation (pathology tiles, satellite patches, wafer maps); on ELPV cells, where vertical
            flips already cover the symmetry that matters, it gave no defect-kNN gain (docs/pretraining.md).
        jitter_prob / brightness / contrast / saturation / hue: Colour jitter.
        grayscale_prob: Random grayscale (rgb only).
        blur / solarize: Gaussian blur probability of the first global crop (the second gets 0.1x,
            local crops 0.5x of it) and solarize probability of the second one (DINO's asymmetric recipe).
        mean / std: Normalisation, also written into the export's pretrained_cfg.
        backend: ``pil`` (the recipe per image in the loader workers, lightly's transforms) or
            ``gpu`` (workers only decode and resize to ``load_size``; the module makes the crops
            on the device with :class:`pipeline.augment.gpu_multicrop.GPUMultiCrop`). See docs/pretraining.md.
        load_size: ``gpu`` backend: side of the square each image is resized to in the workers
            (0 = 8/7 of ``global_size``, i.e. 256 for 224).
    """

    preset: str = "auto"
    global_crops: int = 2
    local_crops: int = 6
    global_size: int = 224
    local_size: int = 96
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    hflip: float = 0.5
    vflip: float = 0.0
    rotate90: float = 0.0
    jitter_prob: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_prob: float = 0.2
    blur: float = 1.0
    solarize: float = 0.2
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    backend: str = "pil"
    load_size: int = 0

    def __post_init__(self) -> None:
        # OmegaConf.to_object hands sequences over as lists; the recipe is compared and hashed as tuples.
        for name in ("global_scale", "local_scale", "mean", "std"):
            setattr(self, name, tuple(float(v) for v in getattr(self, name)))
        if self.preset not in (*PRESETS, "auto"):
            raise ValueError(f"pretrain.augment.preset={self.preset!r}; expected one of {PRESETS} or auto")
        if self.backend not in BACKENDS:
            raise ValueError(f"pretrain.augment.backend={self.backend!r}; expected one of {BACKENDS}")
        if self.load_size < 0:
            raise ValueError(f"pretrain.augment.load_size={self.load_size}; expected > 0, or 0 for automatic")
        if self.global_crops < 1:
            raise ValueError("pretrain.augment.global_crops must be >= 1")

    @property
    def grayscale(self) -> bool:
        """The ``grayscale`` preset; an unresolved ``auto`` is an error (call :func:`resolve_preset` first)."""
        if self.preset == "auto":
            raise ValueError("pretrain.augment.preset=auto must be resolved from the data first (resolve_preset)")
        return self.preset == "grayscale"


def resolve_preset(preset: str, gray_fraction: float) -> str:
    """``auto`` becomes ``grayscale`` when at least 90 % of the images are single-channel."""
    if preset != "auto":
        return preset
    return "grayscale" if gray_fraction >= 0.9 else "rgb"


def register(cs: ConfigStore) -> None:
    """Store ``pretrain/augment/schema``."""
    cs.store(group="pretrain/augment", name="schema", node=AugmentConfig)
