"""A copy-detection descriptor that needs no training: standardised multi-crop thumbnails.

Generic backbones (ImageNet or self-supervised) map all images of a narrow
domain close together: two different solar cells can be as similar to an
ImageNet model as a cell and its JPEG copy. DINOv2 deduplicates with a
dedicated copy-detection model (SSCD) for that reason. Where none is at hand,
this descriptor works well for the copies real collections accumulate
(re-encoding, rescaling, brightness changes, small border crops):

* grayscale, box-filtered down to ``grid x grid`` (rescaling and JPEG noise
  average out), minus its own mean and L2-normalised (brightness and contrast
  changes cancel), so the cosine similarity of two descriptors is the Pearson
  correlation of two thumbnails;
* computed for several centred crops (``scales``, for example 1.0, 0.94 and
  0.88 of the side), so an image and a border-cropped copy of it still align;
* at search time (:func:`center_on_pool`) the pool's mean thumbnail is
  subtracted, so the layout every image of the domain shares (cell borders,
  busbars) stops dominating the correlation.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image


def copy_descriptor(img: Image.Image, grid: int = 32, scales: tuple[float, ...] = (1.0, 0.94, 0.88)) -> np.ndarray:
    """Descriptors of ``img``'s centred crops, concatenated: shape ``(len(scales) * grid * grid,)``."""
    gray = img.convert("L")
    w, h = gray.size
    out = []
    for s in scales:
        dx, dy = w * (1 - s) / 2, h * (1 - s) / 2
        box = (round(dx), round(dy), max(round(dx) + 1, round(w - dx)), max(round(dy) + 1, round(h - dy)))
        g = np.asarray(gray.crop(box).resize((grid, grid), Image.Resampling.BOX), dtype=np.float32).ravel()
        out.append(_standardise(g))
    return np.concatenate(out)


def _standardise(g: np.ndarray) -> np.ndarray:
    g = g - g.mean(axis=-1, keepdims=True)
    n = np.linalg.norm(g, axis=-1, keepdims=True)
    # A flat image has no pattern; all flat images share one fixed unit vector,
    # orthogonal to every zero-mean descriptor, so they match each other only.
    flat = np.full(g.shape[-1], 1 / np.sqrt(g.shape[-1]), np.float32)
    return np.where(n > 1e-6, g / np.maximum(n, 1e-12), flat)


def split_crops(x: np.ndarray, n_crops: int) -> np.ndarray:
    """``(n, c * d)`` descriptors -> ``(n * c, d)`` rows, crop-major within an item."""
    return x.reshape(x.shape[0] * n_crops, -1)


def pool_mean(x: np.ndarray, n_crops: int, max_rows: int = 50_000, seed: int = 0) -> np.ndarray:
    """Mean full-image (first crop) descriptor over a sample of at most ``max_rows`` items."""
    n = x.shape[0]
    take = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_rows), replace=False))
    d = x.shape[1] // n_crops
    return np.asarray(x[take, :d], dtype=np.float64).mean(axis=0).astype(np.float32)


def center_on_pool(x: np.ndarray, mean: np.ndarray, n_crops: int) -> np.ndarray:
    """Subtract ``mean`` from every crop's descriptor and re-normalise: ``(n * c, d)`` float16 rows."""
    rows = np.asarray(split_crops(np.asarray(x), n_crops), dtype=np.float32) - mean
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows.astype(np.float16)


def center_to_file(x: np.ndarray, mean: np.ndarray, n_crops: int, path: Path, batch_rows: int = 65_536) -> np.ndarray:
    """:func:`center_on_pool` streamed in row batches into a float16 ``.npy``; returns it memory-mapped."""
    n, d = x.shape[0] * n_crops, x.shape[1] // n_crops
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, d))
    for s in range(0, x.shape[0], batch_rows):
        e = min(x.shape[0], s + batch_rows)
        out[s * n_crops : e * n_crops] = center_on_pool(x[s:e], mean, n_crops)
    out.flush()
    del out
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")
