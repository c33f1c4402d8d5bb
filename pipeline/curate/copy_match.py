"""Pair similarity with the crop box refined: the copy descriptor's score of one candidate pair, aligned.

The descriptor (:mod:`pipeline.curate.copy_descriptor`) covers border crops
with 16 fixed boxes, so a copy cut by up to ``crop`` per side matches one of
them only to within ``crop / 4`` per side, and its similarity drops (a 5 %
crop of a 64 px tile lands between boxes). Copy detection therefore runs in two
passes: the kNN graph keeps every pair above a loose *candidate* threshold, and
:func:`pair_similarity` re-scores each candidate with the box of the image
with the larger field of view moved, side by side, to where the other image's
thumbnail correlates best (coordinate ascent in steps of ``crop / 8``, then
halves). Only the descriptor's own thumbnails are compared, so a pair's refined
similarity is never below its kNN similarity, and it stays on the same scale.
Cost: about 50 thumbnails of the two images per pair.
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


def _refine(
    src: Image.Image, box: Box, ref: np.ndarray, best: float, opts: EmbedConfig, mean: np.ndarray | None
) -> tuple[float, Box]:
    """Coordinate ascent of ``box`` (inside ``src``, cropping at most ``copy_crop`` + a step per side)."""
    b = list(box)
    lim = opts.copy_crop + opts.copy_crop / 8
    step = opts.copy_crop / 8
    while step >= opts.copy_crop / 32:
        moved = True
        while moved:
            moved = False
            for i in range(4):
                for d in (-step, step):
                    c = list(b)
                    c[i] += d
                    cut = (c[0], c[1], 1 - c[2], 1 - c[3])
                    if min(cut) < -1e-9 or max(cut) > lim or c[2] - c[0] < 0.3 or c[3] - c[1] < 0.3:
                        continue
                    s = _sim(src, (c[0], c[1], c[2], c[3]), ref, opts, mean)
                    if s > best + 1e-6:
                        best, b, moved = s, c, True
        step /= 2
    return best, (b[0], b[1], b[2], b[3])


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
    """Best similarity of one image's whole thumbnail to a refined box of the other.

    Starts from the best row pair of the two descriptors (the kNN graph's score) and
    refines that box; a match with the mirror image is not refined (the copy suite
    mirrors whole images only, and a free box on top of a mirror fits one straight
    edge onto another too easily).

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
    best: tuple[float, Image.Image, int, np.ndarray] | None = None
    for src, c_src, c_other in ((ga, ca, cb), (gb, cb, ca)):
        s = c_src @ c_other[0]
        r = int(np.argmax(s))
        if best is None or s[r] > best[0]:
            best = (float(s[r]), src, r, c_other[0])
    assert best is not None
    s0, src, r, ref = best
    flip = int(opts.copy_flip)
    if opts.copy_crop <= 0 or (flip and r == 1):
        return s0
    box = FULL if r == 0 else boxes(opts.copy_crop)[r - 1 - flip]
    return _refine(src, box, ref, s0, opts, mean)[0]


def _centre_rows(rows: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    rows = np.asarray(rows, np.float32) - (mean if mean is not None else 0)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
