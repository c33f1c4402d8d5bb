"""The patch-level defect protocol over the evaluation folds, with its heat-map figure.

The bank is rebuilt per fold from that fold's normal training images, so the patch
protocol is scored on the same grouped folds as the frozen protocols. It runs on the
folds of the first partition only: one partition already scores every image once, and
each further partition costs a bank per fold for little narrower an interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.config.eval import PatchCoreConfig
from pipeline.evaluation.dataset import Task
from pipeline.evaluation.folds import Fold
from pipeline.evaluation.heatmaps import pick_images, plot_heatmaps
from pipeline.evaluation.patchcore import PatchResult, patch_protocol, patch_row


def patch_folds(folds: Sequence[Fold]) -> list[Fold]:
    """The folds the patch protocol runs on: those of the first partition."""
    return [f for f in folds if f.seed == folds[0].seed] if folds else []


def patch_fold_rows(
    backbone: str,
    role: str,
    patches: np.ndarray,
    images: Sequence[Image.Image],
    task: Task,
    folds: Sequence[Fold],
    opts: PatchCoreConfig,
    heatmap_path: Path,
) -> list[dict[str, Any]]:
    """One row per fold (``protocol="patchcore"``, fraction 1); the heat maps of the first fold to ``heatmap_path``."""
    assert task.normal is not None
    normal = task.classes.index(task.normal)
    rows: list[dict[str, Any]] = []
    first: PatchResult | None = None
    for f in patch_folds(folds):
        m, res = patch_protocol(patches, task.y, normal, f.train, f.test, opts, f.label_seed)
        labelled = f.train[task.y[f.train] >= 0]
        row = patch_row(backbone, role, task.name, f.seed, len(labelled), m)
        # n_test / n_pool let the summary correct the fold variance as for the frozen protocols.
        rows.append({**row, "fold": f.fold, "n_test": len(res.test_idx), "n_pool": len(labelled)})
        first = first or res
    if first is not None:
        pick = pick_images(first.scores, first.is_defect, opts.heatmap_top, opts.heatmap_normal)
        plot_heatmaps(
            [images[first.test_idx[i]] for i in pick],
            first.maps[pick],
            first.scores[pick],
            first.is_defect[pick],
            first.threshold,
            heatmap_path,
            title=f"{task.name}: {backbone}, highest-scoring test images of one fold, then the calmest normal ones",
        )
    return rows
