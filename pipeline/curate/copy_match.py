"""Refined pair scores: the aligned box (:mod:`pipeline.curate.copy_align`) moved on, then a finer scale.

The kNN graph keeps candidate pairs above a loose threshold; the alignment
step scores them on a dense grid of boxes, in steps of ``crop / 8``; pairs
above the calibrated aligned threshold are refined here:

* **coordinate ascent** of the aligned box's centre and size on the 16 x 16
  thumbnails, from ``crop / 16`` down to ``crop / 32``, the box keeping the
  shape the two images' pixel sizes imply (a crop copy has the shape of the
  box it was cut from; rescaling keeps it);
* a **fine stage** (``copy_refine_grid``, e.g. 32): the box moves on in finer
  steps on thumbnails of that side, minus the domain's mean fine thumbnail
  (``fine_mean``), and the fine score is the pair's score. Distinct solar cells
  of one type share their layout down to the 16 x 16 scale; their defects and
  texture differ at 32 x 32, which JPEG, rescaling and mild blur of a large
  image keep. Images under ``4 * copy_refine_grid`` px keep the coarse score
  (their finer scale is noise).

Cost: about 20 to 60 thumbnails per refined pair (0.1-0.5 ms each).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

from pipeline.config.curate import EmbedConfig
from pipeline.curate.copy_align import Match, align_pairs, centre, shape_aspect, work_array
from pipeline.curate.copy_descriptor import Box, copy_descriptor, rows_per_item, thumb
from pipeline.curate.copy_saturation import match_saturation

FULL: Box = (0.0, 0.0, 1.0, 1.0)


def _sim(
    src: Image.Image, box: Box, ref: np.ndarray, opts: EmbedConfig, mean: np.ndarray | None, grid: int = 0
) -> float:
    t = thumb(src, box, grid or opts.copy_grid, opts.copy_blur, opts.copy_highpass)
    return float(centre(t, mean) @ ref)


def _fit(cx: float, cy: float, bw: float, aspect: float, lim: float) -> Box | None:
    """The box of centre ``(cx, cy)``, width ``bw`` and width/height ``aspect`` (shares of the side), if allowed.

    Allowed: inside the image, no side cut by more than ``lim``.
    """
    bh = bw / aspect
    box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
    cut = (box[0], box[1], 1 - box[2], 1 - box[3])
    if min(cut) < -1e-9 or max(cut) > lim:
        return None
    return (max(0.0, box[0]), max(0.0, box[1]), min(1.0, box[2]), min(1.0, box[3]))


def _ascend(
    src: Image.Image,
    cur: tuple[float, float, float],
    best: float,
    ref: np.ndarray,
    aspect: float,
    opts: EmbedConfig,
    mean: np.ndarray | None,
    steps: tuple[float, float],
    grid: int = 0,
) -> tuple[float, tuple[float, float, float]]:
    """Coordinate ascent of a box ``(cx, cy, width)`` from ``cur``, step ``steps[0]`` halved down to ``steps[1]``."""
    lim = opts.copy_crop + opts.copy_crop / 8
    step = steps[0]
    while step >= steps[1]:
        moved = True
        while moved:
            moved = False
            for i in range(3):
                for d in (-step, step):
                    m = list(cur)
                    m[i] += d
                    box = _fit(m[0], m[1], m[2], aspect, lim)
                    if box is None:
                        continue
                    sim = _sim(src, box, ref, opts, mean, grid)
                    if sim > best + 1e-6:
                        best, cur, moved = sim, (m[0], m[1], m[2]), True
        step /= 2
    return best, cur


def fine_grid(a: tuple[int, int], b: tuple[int, int], opts: EmbedConfig) -> int:
    """The fine stage's thumbnail side for a pair of image sizes, 0 when it keeps the coarse score."""
    g = opts.copy_refine_grid
    return g if g > opts.copy_grid and min(*a, *b) >= 4 * g else 0


def fine_thumb(img: Image.Image, opts: EmbedConfig) -> np.ndarray:
    """The whole-image fine thumbnail (``copy_refine_grid``): what ``fine_mean`` averages."""
    return thumb(img.convert("L"), FULL, opts.copy_refine_grid, opts.copy_blur, opts.copy_highpass)


def _fine(
    src: Image.Image,
    cur: tuple[float, float, float],
    aspect: float,
    other: Image.Image,
    opts: EmbedConfig,
    fine_mean: np.ndarray,
    grid: int,
) -> float:
    """The fine stage: the box ``cur`` of ``src`` moved on in finer steps on ``grid``-side thumbnails."""
    ref = centre(thumb(other, FULL, grid, opts.copy_blur, opts.copy_highpass), fine_mean)
    box = _fit(*cur, aspect, opts.copy_crop + opts.copy_crop / 8) or FULL
    best = _sim(src, box, ref, opts, fine_mean, grid)
    steps = (opts.copy_crop / 32, opts.copy_crop / 128)
    return _ascend(src, cur, best, ref, aspect, opts, fine_mean, steps, grid)[0]


def item_rows(img: Image.Image, opts: EmbedConfig) -> np.ndarray:
    """``img``'s descriptor rows, uncentred: ``(rows_per_item, d)`` (compute once per image, reuse per pair)."""
    return copy_descriptor(
        img, opts.copy_grid, opts.copy_crop, opts.copy_flip, opts.copy_blur, opts.copy_highpass
    ).reshape(rows_per_item(opts.copy_crop, opts.copy_flip), -1)


def refine_match(
    a: Image.Image,
    b: Image.Image,
    match: Match,
    opts: EmbedConfig,
    mean: np.ndarray | None = None,
    fine_mean: np.ndarray | None = None,
) -> float:
    """The refined score of a pair of grayscale images from its aligned :class:`Match`.

    A mirror match is not moved (the copy suite mirrors whole images; a box on top of a mirror fits
    one straight edge onto another too easily); it goes to the fine stage as it is.
    """
    src, other = (a, b) if match.src == 0 else (b, a)
    if match.mirror:
        src = ImageOps.mirror(src)
    aspect = 1.0 if match.mirror else shape_aspect(src.size, other.size)
    box = match.box
    cur = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0])
    best = match.score
    if not match.mirror and opts.copy_crop > 0:
        ref = centre(thumb(other, FULL, opts.copy_grid, opts.copy_blur, opts.copy_highpass), mean)
        best = _sim(src, box, ref, opts, mean)
        best, cur = _ascend(src, cur, best, ref, aspect, opts, mean, (opts.copy_crop / 16, opts.copy_crop / 32))
    grid = fine_grid(src.size, other.size, opts)
    if fine_mean is None or not grid:
        return float(best)
    return _fine(src, cur, aspect, other, opts, fine_mean, grid)


def align_one(a: Image.Image, b: Image.Image, opts: EmbedConfig, mean: np.ndarray | None = None) -> Match:
    """The aligned :class:`Match` of one pair of grayscale images (as the alignment step scores it)."""
    arrays = [work_array(im, opts.copy_grid) for im in (a, b)]
    return align_pairs([(0, 1)], arrays, [a.size, b.size], opts, mean)[0]


def pair_scores(
    a: Image.Image,
    b: Image.Image,
    opts: EmbedConfig,
    mean: np.ndarray | None = None,
    fine_mean: np.ndarray | None = None,
) -> tuple[float, float]:
    """The aligned and the refined score of one pair (what calibration scores its copies with).

    Args:
        a, b: The two images.
        opts: The descriptor settings (grid, crop, flip, blur, high-pass) the kNN graph used.
        mean: The pool's mean descriptor row (``copy_descriptor.pool_mean``), subtracted from
            both sides as in the kNN search; None compares uncentred rows.
        fine_mean: The domain's mean :func:`fine_thumb`; None keeps the coarse score.

    Where one image is clearly more saturated than the other (:mod:`copy_saturation`), the pair
    is also scored with the other clipped alike, and the better scores count.
    """
    ga, gb = a.convert("L"), b.convert("L")
    m = align_one(ga, gb, opts, mean)
    out = (m.score, refine_match(ga, gb, m, opts, mean, fine_mean))
    sat = saturated_scores(ga, gb, opts, mean, fine_mean)
    return out if sat is None else (max(out[0], sat[0]), max(out[1], sat[1]))


def saturated_scores(
    a: Image.Image,
    b: Image.Image,
    opts: EmbedConfig,
    mean: np.ndarray | None = None,
    fine_mean: np.ndarray | None = None,
) -> tuple[float, float] | None:
    """Aligned and refined scores of the pair with its saturation matched (:mod:`copy_saturation`),
    or None where neither image is clearly more saturated.

    The matched comparison leaves the clipped share out, so distinct images agree more easily; its
    distance to 1 is doubled (a score of 0.98 counts as 0.96): a clipped copy, near 1, keeps its
    score, and two distinct images pass a copy threshold only by agreeing twice as closely.
    """
    matched = match_saturation(a, b)
    if matched is None:
        return None
    m = align_one(*matched, opts, mean)
    return 2 * m.score - 1, 2 * refine_match(*matched, m, opts, mean, fine_mean) - 1


def pair_similarity(
    a: Image.Image,
    b: Image.Image,
    opts: EmbedConfig,
    mean: np.ndarray | None = None,
    fine_mean: np.ndarray | None = None,
) -> float:
    """The refined score of one pair (:func:`pair_scores`)."""
    return pair_scores(a, b, opts, mean, fine_mean)[1]
