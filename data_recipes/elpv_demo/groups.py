"""Which ELPV cells come from the same solar module.

The ``elpv-dataset`` package stores its 2,624 cells module by module
(``cell0001.png`` onwards), but names no module. Cells of one module share the
module's exposure, vignetting and busbar layout, so they look far more alike
than cells of different modules; a split that puts neighbours of one module on
both sides flatters every backbone. ``data_recipes/elpv_demo/README.md``
measures the structure this module relies on: similarity between cells falls
off over about 60 index steps (the 6x10 cells of a module) and drops sharply
at module boundaries, which coincide with every change of cell type.

:func:`module_groups` lays a grid of nominal module size over each run of
cells of one type and snaps every grid line to the strongest nearby drop in
similarity (:func:`boundary_contrast`), because a few modules are short (cells
missing) or long, and a rigid grid would cut those and every module after them.

The recipe does not decode all 2,624 cells on every run: it uses
:data:`ELPV_MODULE_STARTS`, the output of :func:`module_groups` on the package
with the default settings (a test recomputes it).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# First cell index (0-based, package order) of every module but the first:
# module_groups(cell_pixels(all cells), types) on elpv-dataset 1.0.
ELPV_MODULE_STARTS = (
    60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 660, 720, 780, 840, 900, 960, 1020, 1080, 1140, 1200, 1254,
    1314, 1374, 1434, 1494, 1554, 1614, 1674, 1734, 1794, 1844, 1904, 1964, 2024, 2084, 2144, 2216, 2276, 2336,
    2396, 2444, 2504, 2564,
)  # fmt: skip


# Modules imaged twice. 50 of the 60 cells of the module starting at index 1734 (cell1735-cell1784)
# reappear, in the same order, as cell2277-cell2326 of the module starting at 2276: at 64 px their
# pixel correlation has median 0.96 (neighbouring cells of one module: 0.66; offsets 541 and 543:
# 0.62 and 0.61), and 41 of the 50 pairs carry the same labels. A twin is put in its original's
# group so that no fold trains on one image of a cell and tests on the other.
ELPV_TWIN_MODULES = {2276: 1734}  # start of the module imaged again -> start of the module it repeats
ELPV_TWIN_CELLS = 50  # how many cells of a twin module repeat its original's, in order


def same_cell(index: int) -> int:
    """The index of the first image of the physical cell at package ``index`` (itself but for twins)."""
    for twin, original in ELPV_TWIN_MODULES.items():
        if twin <= index < twin + ELPV_TWIN_CELLS:
            return original + index - twin
    return index


def elpv_groups(modules: np.ndarray) -> np.ndarray:
    """Group id of each cell from its module id (package order): a twin module takes its original's id."""
    groups = np.array(modules, copy=True)
    for twin, original in ELPV_TWIN_MODULES.items():
        if twin < len(groups):
            groups[groups == groups[twin]] = groups[original]
    return groups


def groups_from_starts(n: int, starts: Sequence[int]) -> np.ndarray:
    """Group id of each of ``n`` items in order, a new group beginning at each index of ``starts``."""
    groups = np.zeros(n, dtype=np.int64)
    for s in starts:
        if not 0 < s < n:
            raise ValueError(f"group start {s} is outside 1..{n - 1}")
        groups[s:] += 1
    return groups


def cell_pixels(paths: Sequence[Path], side: int = 64) -> np.ndarray:
    """Grey values of each image at ``side`` x ``side``, one float32 row per image."""
    rows = [
        np.asarray(
            Image.open(p).convert("L").resize((side, side), Image.Resampling.BILINEAR), dtype=np.float32
        ).reshape(-1)
        for p in paths
    ]
    return np.stack(rows) if rows else np.zeros((0, side * side), np.float32)


def correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation between every pair of rows of ``x`` (n x d): the pixel similarity of two cells."""
    z = x.astype(np.float64) - x.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    z = z / np.where(norms > 0, norms, 1.0)
    return z @ z.T


def boundary_contrast(sim: np.ndarray, window: int) -> np.ndarray:
    """How much a boundary before index ``b`` separates its neighbours, for every ``b``.

    ``out[b]`` is the mean similarity within ``[b - w, b)`` and within
    ``[b, b + w)`` (off-diagonal pairs) minus the mean similarity across
    them, with ``w = min(window, b, n - b)``; ``nan`` where ``w < 2``.
    High at a module boundary, near zero inside a module.
    """
    n = sim.shape[0]
    # Prefix sums make every block sum O(1).
    p = np.zeros((n + 1, n + 1))
    p[1:, 1:] = sim.cumsum(axis=0).cumsum(axis=1)

    def block(a: int, b: int, c: int, d: int) -> float:
        return float(p[b, d] - p[a, d] - p[b, c] + p[a, c])

    diag = np.concatenate([[0.0], np.cumsum(np.diag(sim))])
    out = np.full(n + 1, np.nan)
    for b in range(n + 1):
        w = min(window, b, n - b)
        if w < 2:
            continue
        left = block(b - w, b, b - w, b) - (diag[b] - diag[b - w])
        right = block(b, b + w, b, b + w) - (diag[b + w] - diag[b])
        within = (left + right) / (2 * w * (w - 1))
        out[b] = within - block(b - w, b, b, b + w) / (w * w)
    return out


def _runs(types: Sequence[str] | None, n: int) -> list[tuple[int, int]]:
    """``[start, end)`` of every run of equal types (one run when there are none)."""
    if types is None or n == 0:
        return [(0, n)] if n else []
    if len(types) != n:
        raise ValueError(f"module_groups: {len(types)} types for {n} cells")
    cuts = [0] + [i for i in range(1, n) if types[i] != types[i - 1]] + [n]
    return list(itertools.pairwise(cuts))


def module_groups(
    pixels: np.ndarray,
    types: Sequence[str] | None = None,
    module_size: int = 60,
    tolerance: int = 12,
    window: int = 20,
    grid_penalty: float = 0.005,
) -> np.ndarray:
    """Module id of every cell, for cells in the package's (module by module) order.

    Within each run of one cell type (a module never mixes types), boundaries
    are placed one module apart: each next one at the strongest
    :func:`boundary_contrast` within ``tolerance`` cells of ``module_size`` after
    the last, less ``grid_penalty`` per cell away from that nominal line (so a
    weak bump between two look-alike modules does not pull the boundary off
    the grid; a real short or long module has a far stronger drop). A run
    whose rest is at most ``module_size + tolerance`` cells long ends in one
    module.

    Args:
        pixels: One row per cell, in package order (e.g. :func:`cell_pixels`).
        types: Cell type per cell (``mono``/``poly``), or ``None`` to ignore types.
        module_size: Nominal cells per module (ELPV: 60, 6 x 10).
        tolerance: How far a boundary may move from the nominal grid.
        window: Cells on each side that :func:`boundary_contrast` compares.
        grid_penalty: Contrast a boundary must gain per cell it moves off the grid.

    Returns:
        int64 array of group ids ``0..G-1``, non-decreasing along the cells.
    """
    if module_size < 1 or not 0 <= tolerance < module_size:
        raise ValueError(
            f"module_groups: need module_size >= 1 and 0 <= tolerance < module_size, got {module_size}, {tolerance}"
        )
    n = pixels.shape[0]
    contrast = boundary_contrast(correlation(pixels), window)
    cuts: list[int] = []
    for start, end in _runs(types, n):
        a = start
        while end - a > module_size + tolerance:
            lo, hi = a + module_size - tolerance, min(a + module_size + tolerance, end - 1)
            dist = np.abs(np.arange(lo, hi + 1) - (a + module_size))
            scores = np.nan_to_num(contrast[lo : hi + 1], nan=-np.inf) - grid_penalty * dist
            # Ties (flat contrast) go to the nominal grid line.
            a = lo + int(np.lexsort((dist, -scores))[0])
            cuts.append(a)
        cuts.append(end)
    return groups_from_starts(n, cuts[:-1])
