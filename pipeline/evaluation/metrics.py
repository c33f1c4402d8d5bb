"""Classification metrics fit for imbalanced domain data.

Accuracy alone flatters a model that predicts the majority class (ELPV is about
3:1 functional:defective), so every protocol reports balanced accuracy and
macro-F1 as well, plus AUROC for binary tasks (threshold-free).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

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
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} differ in shape")
    out = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=list(range(num_classes)), average="macro", zero_division=0)),
    }
    if num_classes == 2 and proba is not None and len(np.unique(y_true)) == 2:
        out["auroc"] = float(roc_auc_score(y_true, np.asarray(proba)[:, 1]))
    return out
