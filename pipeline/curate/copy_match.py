"""Pair similarity with the crop box refined: the copy descriptor's score of one candidate pair, aligned.

The descriptor (:mod:`pipeline.curate.copy_descriptor`) covers border crops
with 16 fixed boxes, so a copy cut by up to ``crop`` per side matches one of
them only to within ``crop / 4`` per side, and its similarity drops (a 5 %
crop of a 64 px tile lands between boxes). Copy detection therefore runs in two
passes: the kNN graph keeps every pair above a loose *candidate* threshold, and
:func:`pair_similarity` re-scores each candidate with a box of one image
moved to where the other image's whole thumbnail correlates best (coordinate
ascent of the box's centre and size in steps of ``crop / 8``, then halves),
the box keeping the shape the two images' pixel sizes imply. Only the
descriptor's own thumbnails are compared, so the refined score stays on the
kNN score's scale. Cost: about 40 to 80 thumbnails per pair (0.3-0.5 ms each).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from pipeline.config.curate import EmbedConfig
from pipeline.curate.copy_descriptor import Box, boxes, copy_descriptor, rows_per_item, thumb

FULL: Box = (0.0, 0.0, 1.0, 1.0)


def _centred(v: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    v = v - mean if mean is not None else v
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _sim(src: Image.Image, box: Box, ref: np.ndarray, opts: EmbedConfig, mean: np.ndarray | None) -> float:
    t = thumb(src, box, opts.copy_grid, opts.copy_blur, opts.copy_highpass)
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


def _refine(
    src: Image.Image, starts: list[Box], ref: np.ndarray, aspect: float, opts: EmbedConfig, mean: np.ndarray | None
) -> float:
    """Best similarity of a box of ``src`` with width/height ``aspect`` to ``ref``; coordinate ascent from ``starts``.

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
    step = opts.copy_crop / 8
    while step >= opts.copy_crop / 32:
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
                    sim = _sim(src, box, ref, opts, mean)
                    if sim > best + 1e-6:
                        best, cur, moved = sim, (m[0], m[1], m[2]), True
        step /= 2
    return float(best)


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
) -> float:
    """Best similarity of one image's whole thumbnail to a refined box of the other, in either direction.

    For each direction the three best boxes of the kNN rows are the starts; the box keeps
    the shape the pixel sizes imply (:func:`_refine`). A match with the mirror image counts
    only between images of one size and is not refined (the copy suite mirrors whole
    images; a box on top of a mirror fits one straight edge onto another too easily).

    Args:
        a, b: The two images.
        opts: The descriptor settings (grid, crop, flip, blur, high-pass) the kNN graph used.
        mean: The pool's mean descriptor row (``copy_descriptor.pool_mean``), subtracted from
            both sides as in the kNN search; None compares uncentred rows.
        rows: :func:`item_rows` of ``a`` and ``b`` when already computed.
    """
    ga, gb = a.convert("L"), b.convert("L")
    ra, rb = rows if rows is not None else (item_rows(ga, opts), item_rows(gb, opts))
    ca, cb = _centre_rows(ra, mean), _centre_rows(rb, mean)
    flip = int(opts.copy_flip)
    regions = [FULL, *boxes(opts.copy_crop)]
    region_rows = [0, *range(1 + flip, ca.shape[0])]
    out = -np.inf
    for src, other, c_src, c_other in ((ga, gb, ca, cb), (gb, ga, cb, ca)):
        s = c_src @ c_other[0]
        if flip and src.size == other.size:
            out = max(out, float(s[1]))  # a mirror copy: the whole mirrored image, not refined
        if opts.copy_crop <= 0:
            out = max(out, float(s[0]))
            continue
        # The src box of the pair must have the other image's shape (in src's pixels).
        aspect = (other.width / other.height) / (src.width / src.height)
        top = sorted(range(len(regions)), key=lambda i: -s[region_rows[i]])[:3]
        out = max(out, _refine(src, [regions[i] for i in top], c_other[0], aspect, opts, mean))
    return float(out)


def _centre_rows(rows: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    rows = np.asarray(rows, np.float32) - (mean if mean is not None else 0)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
