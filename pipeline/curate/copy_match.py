"""Pair similarity with the crop box refined: the copy descriptor's score of one candidate pair, aligned.

The descriptor (:mod:`pipeline.curate.copy_descriptor`) covers border crops
with 16 fixed boxes, so a copy cut by up to ``crop`` per side matches one of
them only to within ``crop / 4`` per side, and its similarity drops (a 5 %
crop of a 64 px tile lands between boxes). Copy detection therefore runs in two
passes: the kNN graph keeps every pair above a loose *candidate* threshold, and
:func:`pair_similarity` re-scores each candidate with a box of one image
moved to where the other image's whole thumbnail correlates best (coordinate
ascent of the box's centre and size in steps of ``crop / 8``, then halves),
the box keeping the shape the two images' pixel sizes imply.

Two additions make heavy crops and near-identical distinct images tell apart:

* a **template-matching start** (:func:`template_start`): the other image,
  resized to each allowed box size, is located in this one by normalised
  cross-correlation on 48 px thumbnails (:func:`ncc`). A crop of 20 % per
  side is a 60 % box; on images with a repeated layout (solar cells' busbars)
  the ascent from the fixed boxes alone can stop one period off;
* a **fine stage** (``copy_refine_grid``, e.g. 32): the box found on the
  16 x 16 thumbnails moves on in finer steps on thumbnails of that side, minus
  the domain's mean fine thumbnail (``fine_mean``), and the fine score is the
  pair's score. Distinct solar cells of one type share their layout down to
  the 16 x 16 scale; their defects and texture differ at 32 x 32, which JPEG,
  rescaling and mild blur of a large image keep. Images under
  ``4 * copy_refine_grid`` px keep the coarse score (their finer scale is noise).

Cost: about 80 to 200 thumbnails per pair (0.1-0.5 ms each).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image, ImageOps

from pipeline.config.curate import EmbedConfig
from pipeline.curate.copy_descriptor import Box, boxes, copy_descriptor, rows_per_item, thumb

FULL: Box = (0.0, 0.0, 1.0, 1.0)
NEAR_EXACT = 0.995  # a fixed box this close needs no template search to start from


def _centred(v: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    v = v - mean if mean is not None else v
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _sim(
    src: Image.Image, box: Box, ref: np.ndarray, opts: EmbedConfig, mean: np.ndarray | None, grid: int = 0
) -> float:
    t = thumb(src, box, grid or opts.copy_grid, opts.copy_blur, opts.copy_highpass)
    return float(_centred(t, mean) @ ref)


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


def _refine(
    src: Image.Image, starts: list[Box], ref: np.ndarray, aspect: float, opts: EmbedConfig, mean: np.ndarray | None
) -> tuple[float, tuple[float, float, float]]:
    """Best similarity of a box of ``src`` with width/height ``aspect`` to ``ref``, and that box
    ``(cx, cy, width)``; coordinate ascent from ``starts``.

    The box keeps the aspect ratio the two images' pixel sizes imply (a crop copy has the shape of
    the box it was cut from; rescaling keeps it), so only its centre and size move: a free box could
    also shear one straight edge onto another, differently slanted one.
    """
    lim = opts.copy_crop + opts.copy_crop / 8
    best, cur = -np.inf, (0.5, 0.5, 1.0)
    for b in starts:
        cx, cy, bw = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0]
        bw = min(bw, aspect)  # projected onto the aspect ratio: the width kept unless the height would not fit
        for c in ((cx, cy, bw), (0.5, 0.5, min(1.0, aspect))):
            box = _fit(*c, aspect, lim)
            if box is not None:
                sim = _sim(src, box, ref, opts, mean)
                if sim > best:
                    best, cur = sim, c
    return _ascend(src, cur, best, ref, aspect, opts, mean, (opts.copy_crop / 8, opts.copy_crop / 32))


def ncc(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Normalised cross-correlation of ``template`` at every position inside ``image`` (``valid`` mode).

    The same values as ``skimage.feature.match_template``; computed directly, which is several times
    faster for thumbnails than its FFT route.
    """
    t = template - template.mean()
    t /= max(float(np.linalg.norm(t)), 1e-12)
    win = sliding_window_view(image, template.shape)
    n = template.size
    num = np.einsum("ijkl,kl->ij", win, t)
    s1, s2 = win.sum(axis=(2, 3)), np.einsum("ijkl,ijkl->ij", win, win)
    return np.asarray(num / np.sqrt(np.maximum(s2 - s1 * s1 / n, 1e-12)), np.float32)


def template_start(src: Image.Image, other: Image.Image, crop: float, aspect: float, side: int = 48) -> Box | None:
    """The box of ``src`` (shares of its sides) where ``other`` matches best, over box widths 1 - 2 crop to 1.

    ``other`` is resized to each of 9 box sizes (the aspect its pixel sizes imply) and located in
    ``src`` resized to ``side`` px wide by normalised cross-correlation; ``None`` when no size fits.
    ``aspect``: the box's width/height in shares of ``src``'s sides. The refinement's ascent then
    corrects the position to within a fraction of a thumbnail pixel.
    """
    w0, h0 = side, max(8, round(side * src.height / src.width))
    s = np.asarray(src.resize((w0, h0), Image.Resampling.BOX), np.float32)
    best: tuple[float, Box | None] = (-2.0, None)
    for bw in np.linspace(1 - 2 * crop, 1.0, 9).tolist():
        tw, th = round(bw * w0), round(bw / aspect * h0)
        if not (4 <= tw <= w0 and 4 <= th <= h0) or th < (1 - 2 * crop) * h0 - 1:
            continue
        t = np.asarray(other.resize((tw, th), Image.Resampling.BOX), np.float32)
        if t.std() < 1e-6:
            continue  # a flat template correlates with nothing
        r = ncc(s, t)
        y, x = np.unravel_index(int(np.argmax(r)), r.shape)
        if r[y, x] > best[0]:
            best = (float(r[y, x]), (x / w0, y / h0, (x + tw) / w0, (y + th) / h0))
    return best[1]


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
    ref = _centred(thumb(other, FULL, grid, opts.copy_blur, opts.copy_highpass), fine_mean)
    box = _fit(*cur, aspect, opts.copy_crop + opts.copy_crop / 8) or FULL
    best = _sim(src, box, ref, opts, fine_mean, grid)
    steps = (opts.copy_crop / 32, opts.copy_crop / 128)
    return _ascend(src, cur, best, ref, aspect, opts, fine_mean, steps, grid)[0]


def item_rows(img: Image.Image, opts: EmbedConfig) -> np.ndarray:
    """``img``'s descriptor rows, uncentred: ``(rows_per_item, d)`` (compute once per image, reuse per pair)."""
    return copy_descriptor(
        img, opts.copy_grid, opts.copy_crop, opts.copy_flip, opts.copy_blur, opts.copy_highpass
    ).reshape(rows_per_item(opts.copy_crop, opts.copy_flip), -1)


def pair_similarity(
    a: Image.Image,
    b: Image.Image,
    opts: EmbedConfig,
    mean: np.ndarray | None = None,
    rows: tuple[np.ndarray, np.ndarray] | None = None,
    fine_mean: np.ndarray | None = None,
) -> float:
    """Best similarity of one image's whole thumbnail to a refined box of the other, in either direction.

    For each direction the template-matching box and the three best boxes of the kNN rows are the
    starts; the box keeps the shape the pixel sizes imply (:func:`_refine`). A match with the mirror
    image counts only between images of one size and is not refined (the copy suite mirrors whole
    images; a box on top of a mirror fits one straight edge onto another too easily). With
    ``fine_mean`` (and ``copy_refine_grid``), the best box then goes through the fine stage and its
    fine score is the pair's score.

    Args:
        a, b: The two images.
        opts: The descriptor settings (grid, crop, flip, blur, high-pass) the kNN graph used.
        mean: The pool's mean descriptor row (``copy_descriptor.pool_mean``), subtracted from
            both sides as in the kNN search; None compares uncentred rows.
        rows: :func:`item_rows` of ``a`` and ``b`` when already computed.
        fine_mean: The domain's mean :func:`fine_thumb`; None keeps the coarse score.
    """
    ga, gb = a.convert("L"), b.convert("L")
    ra, rb = rows if rows is not None else (item_rows(ga, opts), item_rows(gb, opts))
    ca, cb = _centre_rows(ra, mean), _centre_rows(rb, mean)
    flip = int(opts.copy_flip)
    regions = [FULL, *boxes(opts.copy_crop)]
    region_rows = [0, *range(1 + flip, ca.shape[0])]
    out, at = -np.inf, None
    for src, other, (sw, sh), (ow, oh), c_src, c_other in (
        (ga, gb, ga.size, gb.size, ca, cb),
        (gb, ga, gb.size, ga.size, cb, ca),
    ):
        s = c_src @ c_other[0]
        if flip and (sw, sh) == (ow, oh) and float(s[1]) > out:
            # a mirror copy: the whole mirrored image, not refined
            out, at = float(s[1]), (ImageOps.mirror(src), (0.5, 0.5, 1.0), 1.0, other)
        if opts.copy_crop <= 0:
            if float(s[0]) > out:
                out, at = float(s[0]), (src, (0.5, 0.5, 1.0), 1.0, other)
            continue
        # The src box of the pair must have the other image's shape (in src's pixels).
        aspect = (ow / oh) / (sw / sh)
        top = sorted(range(len(regions)), key=lambda i: -s[region_rows[i]])[:3]
        starts = [regions[i] for i in top]
        # The template search (most of a pair's cost) only where the fixed boxes leave room to gain.
        tm = template_start(src, other, opts.copy_crop, aspect) if float(s.max()) < NEAR_EXACT else None
        sim, cur = _refine(src, [tm, *starts] if tm is not None else starts, c_other[0], aspect, opts, mean)
        if sim > out:
            out, at = sim, (src, cur, aspect, other)
    grid = fine_grid(ga.size, gb.size, opts)
    if fine_mean is None or not grid or at is None:
        return float(out)
    src, cur, aspect, other = at
    return _fine(src, cur, aspect, other, opts, fine_mean, grid)


def _centre_rows(rows: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    rows = np.asarray(rows, np.float32) - (mean if mean is not None else 0)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
