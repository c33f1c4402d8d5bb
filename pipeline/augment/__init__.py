"""Augmentation on batched tensors (GPU multi-crop for SSL pretraining)."""

from pipeline.augment.gpu_multicrop import GPUMultiCrop, MultiCropConfig, MultiCrops

__all__ = ["GPUMultiCrop", "MultiCropConfig", "MultiCrops"]
