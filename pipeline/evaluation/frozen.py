"""The frozen-feature protocols (kNN, linear probe) over folds and label fractions.

For every fold (see :mod:`~pipeline.evaluation.folds`), label subsets are drawn inside the
fold's training part (stratified, nested, seeded: :mod:`~pipeline.evaluation.fractions`)
and scored on the fold's test part. Each row is one (fold, fraction); where some
evaluation images were in the pretraining pool, the row also carries the scores of the
held-out test images alone (``heldout_<metric>``).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.config.eval import KnnConfig, LinearProbeConfig
from pipeline.evaluation.dataset import Task
from pipeline.evaluation.folds import Fold
from pipeline.evaluation.fractions import nested_label_subsets
from pipeline.evaluation.knn import knn_classify
from pipeline.evaluation.linear_probe import fit_linear_probe
from pipeline.evaluation.metrics import classification_metrics


def score_row(
    y: np.ndarray, test: np.ndarray, pred: np.ndarray, proba: np.ndarray, num_classes: int, heldout: np.ndarray | None
) -> dict[str, float]:
    """Metrics of the test predictions, plus ``heldout_<metric>`` over held-out test images when
    ``heldout`` marks only some of them."""
    m: dict[str, float] = dict(classification_metrics(y[test], pred, proba, num_classes))
    if heldout is not None and not heldout[test].all():
        keep = heldout[test]
        if keep.any():
            sub = classification_metrics(y[test][keep], pred[keep], proba[keep], num_classes)
            m.update({f"heldout_{k}": v for k, v in sub.items()})
    return m


# Hundreds of small fits: multi-threaded BLAS only adds synchronisation (and, on a
# shared machine, spin-waiting that made this loop ~20x slower).
@threadpool_limits.wrap(limits=1)
def frozen_protocols(
    backbone: str,
    role: str,
    feats: np.ndarray,
    task: Task,
    folds: Sequence[Fold],
    fractions: Sequence[float],
    min_per_class: int,
    knn: KnnConfig | None,
    probe: LinearProbeConfig | None,
    heldout: np.ndarray | None = None,
    workers: int = 2,
) -> list[dict[str, Any]]:
    """kNN and linear probe on every fold at every label fraction (``workers`` folds at a time).

    Returns:
        Rows ``{backbone, role, task, protocol, fraction, seed, fold, n_labels, n_test, n_pool, <metrics>}``
        (``n_pool``: the fold's training images the fractions are drawn from), and for the probe
        ``probe_c`` and ``probe_selection``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Folds are independent: one worker per core (torch ops release the GIL; each runs single-threaded).
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(folds)))) as pool:
            parts = list(
                pool.map(
                    lambda f: _fold_rows(backbone, role, feats, task, f, fractions, min_per_class, knn, probe, heldout),
                    folds,
                )
            )
    finally:
        torch.set_num_threads(threads)
    return [r for part in parts for r in part]


def _fold_rows(
    backbone: str,
    role: str,
    feats: np.ndarray,
    task: Task,
    fold: Fold,
    fractions: Sequence[float],
    min_per_class: int,
    knn: KnnConfig | None,
    probe: LinearProbeConfig | None,
    heldout: np.ndarray | None,
) -> list[dict[str, Any]]:
    import torch

    torch.set_num_threads(1)  # this worker thread's own intra-op setting
    y, C = task.y, task.num_classes
    rows: list[dict[str, Any]] = []
    base = {"backbone": backbone, "role": role, "task": task.name, "seed": fold.seed, "fold": fold.fold}
    sizes = {"n_test": len(fold.test), "n_pool": len(fold.train)}
    subsets = nested_label_subsets(y, fold.train, fractions, fold.label_seed, min_per_class)
    for frac, idx in subsets.items():
        common = {**base, "fraction": frac, "n_labels": len(idx), **sizes}
        if knn is not None:
            pred, proba = knn_classify(
                feats[idx],
                y[idx],
                feats[fold.test],
                C,
                k=knn.k,
                temperature=knn.temperature,
                centre=knn.centre,
                prior_correction=knn.prior_correction,
            )
            rows.append({**common, "protocol": "knn", **score_row(y, fold.test, pred, proba, C, heldout)})
        if probe is not None:
            present = np.unique(y[idx])
            if len(present) < 2:
                # Grouped folds can leave a training fold with one class of a rare-in-groups task:
                # the only honest classifier then predicts that class (AUROC 0.5 where defined).
                proba = np.zeros((len(fold.test), C))
                proba[:, present[0]] = 1.0
                pred, c, how = np.full(len(fold.test), present[0]), float("nan"), "one_class"
            else:
                r = fit_linear_probe(feats[idx], y[idx], feats[fold.test], C, probe, fold.label_seed)
                pred, proba, c, how = r.pred, r.proba, r.c, r.selection
            rows.append(
                {
                    **common,
                    "protocol": "linear_probe",
                    **score_row(y, fold.test, pred, proba, C, heldout),
                    "probe_c": c,
                    "probe_selection": how,
                }
            )
    return rows
