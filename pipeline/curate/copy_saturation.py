"""Saturation matching: compare a clipped copy with its original clipped the same way.

A brightness or contrast change that pushes part of an image past white (or
black) flattens that part: a bright solar cell brightened by 20 % loses 60-75 %
of its pixels to 255, and its thumbnail correlates with the original's at only
0.84. The clipping is a monotone map the descriptor does not undo, but it can
be copied: when one image of a pair has at least 5 % of its pixels at its top
(or bottom) grey level and the other at most 1 % (or a tenth of that share),
the other is clipped at the
quantile that saturates the same share, and both are stretched back to the
full range. Pairs of graphics saturated at both ends (digits, silhouettes) are
left alone: clipping would flatten them into matches. A
brightened copy and its original then agree again (0.9997 for that cell), while
two distinct cells stay as far apart as before (their structure outside the
clipped share still differs).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

CLIPPED = 0.05  # an end with at least this share of pixels at its grey level is clipped
CLEAN = 0.01  # ... and the other image's end is clean with at most this share, or a tenth of that one


def saturation(arr: np.ndarray) -> tuple[float, float]:
    """Shares of the pixels within one grey level of the image's maximum and of its minimum."""
    return float(np.mean(arr >= arr.max() - 1)), float(np.mean(arr <= arr.min() + 1))


def _ends(a: tuple[float, float], b: tuple[float, float]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shares to clip ``(top, bottom)`` of the first image and of the second: an end is matched only
    where one image is clipped there and the other is clean (two graphics, both saturated, are not)."""
    clip_a = tuple(b[e] if b[e] >= CLIPPED and a[e] <= max(CLEAN, b[e] / 10) else 0.0 for e in range(2))
    clip_b = tuple(a[e] if a[e] >= CLIPPED and b[e] <= max(CLEAN, a[e] / 10) else 0.0 for e in range(2))
    return (clip_a[0], clip_a[1]), (clip_b[0], clip_b[1])


def mismatched(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether one image of a pair is clipped at an end where the other is clean (:func:`saturation` each)."""
    ea, eb = _ends(a, b)
    return max(*ea, *eb) > 0


def _clip(x: np.ndarray, hi: float, lo: float) -> np.ndarray:
    top = float(np.quantile(x, 1 - hi)) if hi > 0 else float(x.max())
    bottom = float(np.quantile(x, lo)) if lo > 0 else float(x.min())
    return np.clip(x, bottom, max(top, bottom))


def _stretch(x: np.ndarray) -> Image.Image | None:
    span = float(x.max() - x.min())
    if span < 1.0:
        return None  # nothing left but one grey level
    return Image.fromarray(np.round((x - x.min()) / span * 255).astype(np.uint8))


def match_saturation(a: Image.Image, b: Image.Image) -> tuple[Image.Image, Image.Image] | None:
    """Grayscale ``a`` and ``b``, the clean side clipped to the other's saturated share, or None when
    there is nothing to match (:func:`mismatched`) or clipping leaves a flat image."""
    x, y = (np.asarray(im.convert("L"), np.float32) for im in (a, b))
    ex, ey = _ends(saturation(x), saturation(y))
    if max(*ex, *ey) == 0:
        return None
    sx, sy = _stretch(_clip(x, *ex)), _stretch(_clip(y, *ey))
    return None if sx is None or sy is None else (sx, sy)
