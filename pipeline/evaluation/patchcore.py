"""PatchCore-style defect scoring: a coreset memory bank of normal patches, scored by nearest-neighbour distance.

Label-free in the sense that matters for inspection: only *normal* training images are
used (no defect examples). Each test image's score is its largest patch distance to the
bank (PatchCore with one neighbour); the distance map upsampled over the image is its
heat map. The greedy coreset is a port of ``ApproximateGreedyCoresetSampler`` from
amazon-science/patchcore-inspection (Apache-2.0).

:func:`patch_protocol` takes the train and test indices of one split, so it serves a fixed
split and every fold of a cross-validation alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import torch

from pipeline.config.eval import PatchCoreConfig
from pipeline.evaluation.metrics import classification_metrics


def pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(len(a), len(b))``, computed as the original does (``|a|^2 + |b|^2 - 2ab``,
    clamped at 0), so the coreset picks the same points."""
    aa = (a * a).sum(1, keepdim=True)
    bb = (b * b).sum(1).reshape(1, -1)
    return (-2 * a.mm(b.T) + aa + bb).clamp(0, None).sqrt()


@torch.no_grad()
def approximate_greedy_coreset(features: torch.Tensor, n_select: int, start_points: np.ndarray) -> np.ndarray:
    """Indices of ``n_select`` rows of ``features`` picked by approximate greedy (k-center) selection.

    Every point starts at its mean distance to ``start_points``; each step picks the point
    farthest from everything picked so far and lowers the others' distances to it. Needs
    one ``(n,)`` distance vector per step instead of the ``(n, n)`` matrix.
    """
    dist = pairwise_distances(features, features[torch.as_tensor(start_points)]).mean(1)
    sq = (features * features).sum(1)  # the squared norms, once instead of every step
    picked = np.empty(n_select, dtype=np.int64)
    # Thousands of small matrix-vector products: extra threads only synchronise (and, on a
    # shared machine, spin-wait, which made this loop ten times slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in range(n_select):
            j = int(torch.argmax(dist))
            picked[i] = j
            to_j = (-2 * features.mv(features[j]) + sq + sq[j]).clamp_(min=0).sqrt_()
            torch.minimum(dist, to_j, out=dist)
    finally:
        torch.set_num_threads(threads)
    return picked


def coreset(features: np.ndarray, opts: PatchCoreConfig, seed: int) -> np.ndarray:
    """Row indices of ``features`` that the memory bank keeps (``coreset_ratio`` of them, at least one).

    Distances are measured after a seeded random linear projection to ``projection_dim``
    dimensions (the original's ``torch.nn.Linear`` without bias, default initialisation).
    """
    n = len(features)
    n_select = max(1, int(n * opts.coreset_ratio))
    if opts.coreset_ratio >= 1 or n_select >= n:
        return np.arange(n)
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    if x.shape[1] != opts.projection_dim:
        torch.manual_seed(seed)
        mapper = torch.nn.Linear(x.shape[1], opts.projection_dim, bias=False)
        with torch.no_grad():
            x = mapper(x)
    starts = np.random.default_rng(seed).choice(n, min(opts.start_points, n), replace=False)
    return approximate_greedy_coreset(x, n_select, starts)


def memory_bank(patches: np.ndarray, opts: PatchCoreConfig, seed: int) -> np.ndarray:
    """The bank ``(m, d)`` from normal images' patch features ``(n, h, w, d)``: at most
    ``patches_per_image`` random patches per image, then the greedy coreset."""
    n, h, w, d = patches.shape
    rng = np.random.default_rng(seed)
    k = min(opts.patches_per_image, h * w)
    cells = np.stack([rng.choice(h * w, k, replace=False) for _ in range(n)]) if n else np.zeros((0, k), int)
    candidates = patches.reshape(n, h * w, d)[np.arange(n)[:, None], cells].reshape(-1, d).astype(np.float32)
    return np.ascontiguousarray(candidates[coreset(candidates, opts, seed)])


def patch_distances(bank: np.ndarray, patches: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Every patch's distance to its nearest bank entry: ``(n, h, w)`` for patches ``(n, h, w, d)``."""
    n, h, w, d = patches.shape
    index = faiss.IndexFlatL2(d)
    index.add(np.ascontiguousarray(bank, dtype=np.float32))
    out = np.empty((n, h * w), dtype=np.float32)
    for s in range(0, n, chunk):
        q = np.ascontiguousarray(patches[s : s + chunk].reshape(-1, d), dtype=np.float32)
        sq, _ = index.search(q, 1)
        out[s : s + chunk] = np.sqrt(np.maximum(sq[:, 0], 0)).reshape(-1, h * w)
    return out.reshape(n, h, w)


@dataclass
class PatchResult:
    """One split's outcome.

    Attributes:
        test_idx: The scored images (indices into the whole set).
        scores: Their image scores (largest patch distance).
        maps: Their patch-distance maps ``(n, h, w)``.
        is_defect: Their binary truth (not the normal class).
        threshold: Score above which an image is called defective.
        bank_size: Patches in the memory bank.
    """

    test_idx: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    is_defect: np.ndarray
    threshold: float
    bank_size: int


def patch_protocol(
    patches: np.ndarray,
    y: np.ndarray,
    normal: int,
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    opts: PatchCoreConfig,
    seed: int = 0,
) -> tuple[dict[str, float], PatchResult]:
    """Fit a memory bank on the normal images of ``train_idx``, score ``test_idx``.

    Args:
        patches: Patch features of the whole set ``(n, h, w, d)``.
        y: Class ids of the whole set (``-1``: unlabelled, left out of both sides).
        normal: The normal class id; every other class counts as a defect.
        train_idx, test_idx: The split (indices into ``patches``).
        opts: Bank and threshold options.
        seed: Seeds the patch cap, the calibration hold-out and the coreset.

    Returns:
        ``(metrics, result)``: accuracy, balanced accuracy, macro-F1 (at the threshold from
        held-out normal training images) and AUROC of normal vs defect; the scores and maps.
    """
    train_idx = train_idx[y[train_idx] >= 0]
    test_idx = test_idx[y[test_idx] >= 0]
    normals = train_idx[y[train_idx] == normal]
    if len(normals) < 2:
        raise ValueError(f"patch protocol: {len(normals)} normal training images; it needs at least 2")
    rng = np.random.default_rng(seed)
    held = rng.permutation(normals)
    n_cal = min(len(normals) - 1, max(1, round(len(normals) * opts.calibration_fraction)))
    calibration, bank_images = np.sort(held[:n_cal]), np.sort(held[n_cal:])
    bank = memory_bank(patches[bank_images], opts, seed)
    cal_scores = patch_distances(bank, patches[calibration]).reshape(len(calibration), -1).max(1)
    threshold = float(np.quantile(cal_scores, opts.threshold_quantile))
    maps = patch_distances(bank, patches[test_idx])
    scores = maps.reshape(len(test_idx), -1).max(1)
    is_defect = (y[test_idx] != normal).astype(np.int64)
    pred = (scores > threshold).astype(np.int64)
    proba = np.stack([-scores, scores], axis=1)  # only the order matters to AUROC
    metrics = classification_metrics(is_defect, pred, proba, 2)
    return metrics, PatchResult(test_idx, scores, maps, is_defect.astype(bool), threshold, len(bank))


def patch_row(
    backbone: str, role: str, task: str, seed: int, n_labels: int, metrics: dict[str, float]
) -> dict[str, Any]:
    """A result row in the format of :mod:`pipeline.evaluation.protocols` (the whole training split: fraction 1)."""
    return {
        "backbone": backbone,
        "role": role,
        "task": task,
        "protocol": "patchcore",
        "fraction": 1.0,
        "seed": seed,
        "n_labels": n_labels,
        **metrics,
    }
