"""Anomaly heat maps: patch-distance maps upsampled over the images they score.

The figure shows the highest-scoring test images and, for contrast, the lowest-scoring
normal ones, on one shared colour scale so that a cold normal image reads as cold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage


def upsample_map(patch_map: np.ndarray, size: int) -> np.ndarray:
    """A ``(h, w)`` patch-distance map bilinearly resized to ``size`` x ``size`` and smoothed
    (PatchCore's ``RescaleSegmentor``: a Gaussian of sigma 4 at 224 px, scaled to ``size``)."""
    t = torch.from_numpy(np.asarray(patch_map, dtype=np.float32))[None, None]
    up = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy()
    return np.asarray(ndimage.gaussian_filter(up, sigma=4 * size / 224))


def pick_images(scores: np.ndarray, is_defect: np.ndarray, top: int, normal: int) -> list[int]:
    """Positions (into ``scores``) of the ``top`` highest scores, then the ``normal`` lowest-scoring normal images."""
    order = np.argsort(-scores, kind="stable")
    high = [int(i) for i in order[:top]]
    calm = [int(i) for i in order[::-1] if not is_defect[i] and int(i) not in high][:normal]
    return high + calm


def plot_heatmaps(
    images: Sequence[Image.Image],
    maps: np.ndarray,
    scores: np.ndarray,
    is_defect: np.ndarray,
    threshold: float,
    path: Path,
    title: str = "",
    size: int = 160,
) -> Path:
    """One panel per image: the image in grey with its upsampled distance map over it.

    Args:
        images: The images to draw, in the order of ``maps``.
        maps: Their patch-distance maps ``(n, h, w)``.
        scores: Their image scores; shown in each panel's title with the truth.
        is_defect: Their truth (defect or normal).
        threshold: The decision threshold, named in the figure's title.
        path: PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = min(n, 5)
    rows = max(1, -(-n // cols))
    ups = [upsample_map(m, size) for m in maps]
    vmin = float(min((u.min() for u in ups), default=0.0))
    vmax = float(max((u.max() for u in ups), default=1.0))
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows + 0.5), dpi=110, squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, im, up, s, bad in zip(axes.ravel(), images, ups, scores, is_defect):
        grey = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BILINEAR))
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
        ax.imshow(up, cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
        ax.set_title(f"{s:.2f} {'defect' if bad else 'normal'}", fontsize=8, color="crimson" if bad else "black")
    fig.suptitle(title + f"\nscore = largest patch distance; threshold {threshold:.2f}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
