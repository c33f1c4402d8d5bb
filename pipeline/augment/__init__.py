"""Multi-crop augmentation for SSL pretraining: one recipe, two backends.

The recipe is :class:`pipeline.config.augment.AugmentConfig`. ``pil_multicrop`` makes it per
image in the loader workers (lightly's transforms); ``gpu_multicrop`` makes it per batch on
any device (``color`` holds its batched photometric ops); ``device`` picks the loader
transform and the module-side multi-crop for the configured backend.
"""

from pipeline.augment.gpu_multicrop import GPUMultiCrop, MultiCrops

__all__ = ["GPUMultiCrop", "MultiCrops"]
