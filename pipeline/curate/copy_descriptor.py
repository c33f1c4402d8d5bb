"""A copy-detection descriptor that needs no training: standardised thumbnails of many boxes.

Generic backbones (ImageNet or self-supervised) map all images of a narrow
domain close together: two different solar cells can be as similar to an
ImageNet model as a cell and its JPEG copy. DINOv2 deduplicates with a
dedicated copy-detection model (SSCD) for that reason. Where none is at hand,
this descriptor holds for the copies real collections accumulate (JPEG
re-encoding, rescaling, brightness and contrast changes, mild blur, border
crops, mirroring), at any image size from 32 px up:

* grayscale, box-filtered down to ``grid x grid`` from twice that size and
  slightly blurred (rescaling and JPEG noise average out, and a thumbnail
  misaligned by a fraction of a pixel still correlates); two parts, each minus
  its mean and L2-normalised (brightness and contrast changes cancel): the
  thumbnail itself and its high-pass (the thumbnail minus a Gaussian blur of
  ``grid / 8``), weighted ``1 - highpass`` and ``highpass``. The cosine of two
  descriptors is the weighted mean of the two parts' Pearson correlations;
  the high-pass part keeps smooth tiles that share one gradient (a retina's
  border, a cell's shading) apart;
* rows, one per image region (:func:`boxes`): the whole image, its mirror image
  (``flip``), and 16 boxes whose sides are cut by ``crop / 4`` or ``3 crop / 4``
  each, so a copy cropped by up to ``crop`` per side, each side separately,
  matches one box of its original to within ``crop / 4`` per side;
* at search time (:func:`center_on_pool`) the pool's mean thumbnail is
  subtracted, so the layout every image of the domain shares (cell borders,
  busbars) stops dominating the correlation.

Search: the whole-image row of every item queries all rows of the others
(``rows_per_item``); the best row pair is the pair's similarity.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from scipy.ndimage import gaussian_filter1d

Box = tuple[float, float, float, float]  # left, top, right, bottom as shares of the side


def boxes(crop: float) -> list[Box]:
    """The cropped regions a descriptor covers besides the whole image: none when ``crop`` is 0."""
    if crop <= 0:
        return []
    lo, hi = (crop / 4, 3 * crop / 4), (1 - crop / 4, 1 - 3 * crop / 4)
    return [(x0, y0, x1, y1) for x0 in lo for x1 in hi for y0 in lo for y1 in hi]


def rows_per_item(crop: float, flip: bool) -> int:
    """Descriptor rows per image: whole image, mirror image (``flip``), the :func:`boxes`."""
    return 1 + int(flip) + len(boxes(crop))


def thumb(gray: Image.Image, box: Box, grid: int, blur: float, highpass: float) -> np.ndarray:
    """The descriptor part of one ``box`` of a grayscale image: ``(2 grid^2,)`` (or ``(grid^2,)`` without high-pass)."""
    w, h = gray.size
    sup = 2
    region = (box[0] * w, box[1] * h, max(box[0] * w + 1, box[2] * w), max(box[1] * h + 1, box[3] * h))
    t = np.asarray(gray.resize((grid * sup, grid * sup), Image.Resampling.BOX, box=region), np.float32)
    if blur > 0:
        k = gauss(grid * sup, blur * sup)
        t = k @ t @ k.T
    t = t.reshape(grid, sup, grid, sup).mean(axis=(1, 3))
    if highpass <= 0:
        return standardise(t.ravel())
    k = gauss(grid, grid / 8)
    hp = t - k @ t @ k.T
    return np.concatenate([np.sqrt(1 - highpass) * standardise(t.ravel()), np.sqrt(highpass) * standardise(hp.ravel())])


@lru_cache(maxsize=64)
def gauss(n: int, sigma: float) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(x, sigma, mode="nearest")`` along one axis of length ``n`` as a matrix.

    Thumbnails are tiny, so two small matrix products are ten times faster than the filter call.
    """
    return gaussian_filter1d(np.eye(n, dtype=np.float64), sigma, axis=0, mode="nearest").astype(np.float32)


def copy_descriptor(
    img: Image.Image, grid: int = 16, crop: float = 0.2, flip: bool = True, blur: float = 0.5, highpass: float = 0.5
) -> np.ndarray:
    """Descriptor rows of ``img``, concatenated: ``(rows_per_item(crop, flip) * d,)``.

    ``d`` is ``2 grid^2`` (thumbnail and high-pass), ``grid^2`` when ``highpass`` is 0.
    """
    gray = img.convert("L")
    full: Box = (0.0, 0.0, 1.0, 1.0)
    out = [thumb(gray, full, grid, blur, highpass)]
    if flip:
        out.append(thumb(ImageOps.mirror(gray), full, grid, blur, highpass))
    out += [thumb(gray, b, grid, blur, highpass) for b in boxes(crop)]
    return np.concatenate(out).astype(np.float32)


def standardise(g: np.ndarray) -> np.ndarray:
    """Each row (the last axis) minus its mean, unit length; a flat row becomes the fixed flat vector."""
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
