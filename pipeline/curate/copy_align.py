"""Aligned pair scores in batch: one image's thumbnails of a dense grid of boxes against others' whole rows.

The copy descriptor's kNN rows (:mod:`pipeline.curate.copy_descriptor`) cover
border crops with 16 fixed boxes, so a crop that falls between them loses
similarity. On images with sharp, repeated structure the loss is steep: a 6 %
crop of a 300 px solar cell lands 2 % per side from the nearest box and scores
0.74 against its original, below a dozen distinct cells of the same module
(0.80-0.86). The same crop scored with a box 0.5 % off scores 0.98.

This step therefore re-scores each image's kNN candidates with a dense grid of
boxes (:func:`box_grid`: widths and positions in steps of ``crop / 8``, every
side cut by at most ``crop``), the box keeping the shape the two images' pixel
sizes imply. The grid's thumbnails of one image (:func:`box_thumbs`, the same
values as :func:`copy_descriptor.thumb` computed as two matrix products per box
size) are shared by all its candidates of one shape, so the cost is per image
and shape, not per pair: about 4 ms for the 249 boxes of two images of one shape.

The result per pair: the best score over both directions, and the box, which
the refinement (:mod:`pipeline.curate.copy_match`) takes as its start.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pipeline.config.curate import EmbedConfig
from pipeline.curate.copy_descriptor import Box, gauss, standardise

WORK = 4  # working image side per supersampled thumbnail pixel: finer adds nothing the box filter keeps


@dataclass(frozen=True)
class Match:
    """The best aligned score of a pair and where it is.

    Attributes:
        score: Cosine of the box's centred thumbnail and the other image's whole row.
        src: 0 when the box is in the pair's first image, 1 in its second.
        box: The box in ``src`` (left, top, right, bottom as shares of its sides).
        mirror: The match is the mirror image of the whole ``src`` (same-size images only).
    """

    score: float
    src: int
    box: Box
    mirror: bool = False


def box_grid(crop: float, aspect: float, step: float) -> np.ndarray:
    """Boxes ``(n, 4)`` of width/height ``aspect`` (shares of the sides), sides cut by at most ``crop``.

    Widths from ``1 - 2 crop`` to 1 in steps of ``2 step`` (a cut of ``step`` on each side), heights
    ``width / aspect`` within the same range, positions in steps of ``step``; the whole image first
    when ``aspect`` is 1.
    """
    out: list[Box] = []
    for bw in np.arange(1.0, 1 - 2 * crop - 1e-9, -2 * step):
        bh = bw / aspect
        if not 1 - 2 * crop - 1e-9 <= bh <= 1 + 1e-9:
            continue
        bh = min(bh, 1.0)
        xs = _positions(bw, crop, step)
        ys = _positions(bh, crop, step)
        out += [(x, y, x + bw, y + bh) for y in ys for x in xs]
    if not out:  # a shape no allowed box has: the largest box of that shape, centred
        bw = min(1.0, aspect)
        bh = bw / aspect
        out = [((1 - bw) / 2, (1 - bh) / 2, (1 + bw) / 2, (1 + bh) / 2)]
    return np.asarray(out, np.float64)


def _positions(side: float, crop: float, step: float) -> list[float]:
    lo, hi = max(0.0, 1 - side - crop), min(crop, 1 - side)
    if hi < lo - 1e-9:
        return [(1 - side) / 2]
    n = int(np.floor((hi - lo) / step + 1e-9)) + 1
    pos = [lo + i * step for i in range(n)]
    if hi - pos[-1] > 1e-9:
        pos.append(hi)
    return pos


def work_array(gray: Image.Image, grid: int) -> np.ndarray:
    """The grayscale image as float32, box-reduced so its shorter side is at most ``WORK * 2 grid``."""
    w, h = gray.size
    side = WORK * 2 * grid
    if min(w, h) > side:
        f = side / min(w, h)
        gray = gray.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BOX)
    return np.asarray(gray, np.float32)


def _coverage(lo: np.ndarray, hi: np.ndarray, n_cells: int, size: int) -> np.ndarray:
    """``(len(lo), n_cells, size)``: the overlap of each of ``n_cells`` equal cells of ``[lo, hi]``
    (pixel units) with each pixel, divided by the cell's length (a row averages the cell)."""
    edges = lo[:, None] + (hi - lo)[:, None] * np.arange(n_cells + 1) / n_cells
    a, b = edges[:, :-1, None], edges[:, 1:, None]
    px = np.arange(size)[None, None, :]
    cov = np.clip(np.minimum(px + 1, b) - np.maximum(px, a), 0, None)
    return (cov / np.maximum(b - a, 1e-9)).astype(np.float32)


Plan = list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@lru_cache(maxsize=512)
def _plan(key: bytes, n: int, h: int, w: int, grid: int, blur: float) -> Plan:
    """Per box size: the boxes, their row and column interval indices, and the thumbnail matrices.

    A box's thumbnail is ``rows @ image @ cols``: averaging over ``2 grid`` cells per side, the
    blur, and halving are all linear along each axis, so they fold into one matrix per axis. Boxes
    of one size share one product over all their distinct row and column intervals; the same grid
    on images of one working size reuses the matrices.
    """
    sup = 2 * grid
    fold = np.kron(np.eye(grid, dtype=np.float32), np.full((1, 2), 0.5, np.float32))  # (grid, sup): halving
    if blur > 0:
        fold = fold @ gauss(sup, blur * 2)
    boxes = np.frombuffer(key, np.float64).reshape(n, 4)
    x0 = np.maximum(boxes[:, 0] * w, 0)
    x1 = np.maximum(boxes[:, 2] * w, x0 + 1)
    y0 = np.maximum(boxes[:, 1] * h, 0)
    y1 = np.maximum(boxes[:, 3] * h, y0 + 1)
    size = np.round(np.stack([x1 - x0, y1 - y0], 1), 6)
    plan: Plan = []
    for s in np.unique(size, axis=0):
        members = np.flatnonzero((size == s).all(axis=1))
        xk, xi = np.unique(np.round(x0[members], 6), return_inverse=True)
        yk, yi = np.unique(np.round(y0[members], 6), return_inverse=True)
        cx = (fold @ _coverage(xk, xk + s[0], sup, w)).reshape(-1, w).T  # (w, nx * grid)
        cy = (fold @ _coverage(yk, yk + s[1], sup, h)).reshape(-1, h)  # (ny * grid, h)
        plan.append((members, yi.ravel(), xi.ravel(), cy, cx))
    return plan


def box_thumbs(arr: np.ndarray, boxes: np.ndarray, grid: int, blur: float, highpass: float) -> np.ndarray:
    """:func:`copy_descriptor.thumb` of every box of ``arr`` (a :func:`work_array`): ``(n, d)`` float32.

    Two matrix products per box size (:func:`_plan`), then the split into thumbnail and high-pass
    as :func:`copy_descriptor.thumb` does.
    """
    h, w = arr.shape
    boxes = np.ascontiguousarray(boxes, np.float64)
    t = np.empty((len(boxes), grid, grid), np.float32)
    for members, yi, xi, cy, cx in _plan(boxes.tobytes(), len(boxes), h, w, grid, float(blur)):
        prod = (cy @ arr @ cx).reshape(-1, grid, cx.shape[1] // grid, grid)  # (ny, grid, nx, grid)
        t[members] = prod[yi, :, xi, :]
    flat = standardise(t.reshape(len(boxes), -1))
    if highpass <= 0:
        return flat
    k = gauss(grid, grid / 8)
    hp = (t - k @ t @ k.T).reshape(len(boxes), -1)
    return np.concatenate([np.sqrt(1 - highpass) * flat, np.sqrt(highpass) * standardise(hp)], axis=1)


def centre(rows: np.ndarray, mean: np.ndarray | None) -> np.ndarray:
    """Rows minus the pool mean, unit length (as the kNN graph compares them)."""
    rows = np.asarray(rows, np.float32) - (mean if mean is not None else 0)
    return rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)


def shape_aspect(src: tuple[int, int], other: tuple[int, int]) -> float:
    """Width/height, in shares of ``src``'s sides, of a box of ``src`` with ``other``'s pixel shape."""
    return round((other[0] / other[1]) / (src[0] / src[1]), 3)


FULL = np.array([[0.0, 0.0, 1.0, 1.0]])


def whole_rows(arr: np.ndarray, opts: EmbedConfig, mean: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The centred whole-image row of a :func:`work_array` and that of its mirror image."""
    o = opts
    rows = [box_thumbs(x, FULL, o.copy_grid, o.copy_blur, o.copy_highpass)[0] for x in (arr, arr[:, ::-1])]
    return centre(rows[0], mean), centre(rows[1], mean)


def align_pairs(
    pairs: Sequence[tuple[int, int]],
    arrays: Sequence[np.ndarray],
    sizes: Sequence[tuple[int, int]],
    opts: EmbedConfig,
    mean: np.ndarray | None,
    step: float | None = None,
    progress: bool = False,
) -> list[Match]:
    """The best :class:`Match` of every pair ``(a, b)`` of item indices, over both directions.

    Args:
        pairs: Item index pairs.
        arrays: Per item, its :func:`work_array` (only items in a pair are read).
        sizes: Per item, its pixel ``(width, height)``.
        opts: The descriptor settings (``copy_grid``, ``copy_crop``, ``copy_flip``, blur, high-pass).
        mean: The pool's mean row the thumbnails are centred on.
        step: The grid's step (shares of the side); default ``crop / 8``.
        progress: Show a progress bar over the images.
    """
    o = opts
    step = step or max(o.copy_crop / 8, 1e-3)
    used = sorted({x for p in pairs for x in p})
    rows = {i: whole_rows(arrays[i], o, mean) for i in used}
    best = [Match(-np.inf, 0, (0.0, 0.0, 1.0, 1.0)) for _ in pairs]
    # (source, shape) -> [(pair, other, which side the source is)]
    jobs: dict[tuple[int, float], list[tuple[int, int, int]]] = defaultdict(list)
    for p, (a, b) in enumerate(pairs):
        for side, (s, t) in enumerate(((a, b), (b, a))):
            jobs[(s, shape_aspect(sizes[s], sizes[t]))].append((p, t, side))
            if o.copy_flip and sizes[s] == sizes[t]:
                sim = float(rows[s][1] @ rows[t][0])
                if sim > best[p].score:
                    best[p] = Match(sim, side, (0.0, 0.0, 1.0, 1.0), True)
    for (s, aspect), members in tqdm(jobs.items(), desc="align", disable=not progress, leave=False):
        boxes = box_grid(o.copy_crop, aspect, step) if o.copy_crop > 0 else box_grid(0.0, aspect, 1.0)
        d = centre(box_thumbs(arrays[s], boxes, o.copy_grid, o.copy_blur, o.copy_highpass), mean)
        sims = d @ np.stack([rows[t][0] for _, t, _ in members]).T  # (boxes, members)
        at = sims.argmax(axis=0)
        for m, (p, _, side) in enumerate(members):
            sim = float(sims[at[m], m])
            if sim > best[p].score:
                b = boxes[at[m]]
                best[p] = Match(sim, side, (float(b[0]), float(b[1]), float(b[2]), float(b[3])))
    return best
