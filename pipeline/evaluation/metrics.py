"""Classification metrics fit for imbalanced domain data.

Accuracy alone flatters a model that predicts the majority class (ELPV is about
3:1 functional:defective), so every protocol reports balanced accuracy and
macro-F1 as well, plus AUROC for binary tasks (threshold-free).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    num_classes: int,
) -> dict[str, float]:
    """Score predictions.

    Args:
        y_true: True class ids, shape ``(n,)``.
        y_pred: Predicted class ids, shape ``(n,)``.
        proba: Class scores, shape ``(n, num_classes)`` (any monotone score works for AUROC), or ``None``.
        num_classes: Number of classes of the task; macro-F1 averages over all of them,
            so a class the model never predicts counts as F1 = 0.

    Returns:
        ``accuracy``, ``balanced_accuracy``, ``macro_f1`` and, for binary tasks with
        scores and both classes present in ``y_true``, ``auroc``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    # Computed from the confusion matrix rather than with sklearn.metrics: the same
    # numbers (the tests check), without sklearn's per-call validation, which
    # dominated the cost of the thousands of small evaluations a curve needs.
    cm = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1).astype(float), cm.sum(0).astype(float)
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=present)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    out = {
        "accuracy": float(tp.sum() / max(1, len(y_true))),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1.mean()),
    }
    if num_classes == 2 and proba is not None and present.all():
        out["auroc"] = binary_auroc(y_true, np.asarray(proba, dtype=float)[:, 1])
    return out


def binary_auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half)."""
    pos = y_true == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(score)  # average ranks: ties contribute 1/2, as in sklearn's trapezoidal AUC
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
