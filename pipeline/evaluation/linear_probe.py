"""Linear probe: logistic regression on standardised frozen features.

As in DINOv2's linear evaluation, the regularisation strength is chosen on a
validation split carved from the (labelled) training data, then the probe is
refit on all of it. With few labels a single split would leave one or two
validation examples, so small subsets fall back to stratified k-fold
cross-validation, and subsets too small even for that use the grid's middle value.
The test split is never seen before the final prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from pipeline.config.eval import LinearProbeConfig
from pipeline.evaluation.metrics import classification_metrics


@dataclass
class ProbeResult:
    """Test predictions and how ``C`` was chosen."""

    pred: np.ndarray
    proba: np.ndarray
    c: float
    val_score: float
    selection: str  # "holdout", "kfold<k>" or "default"


def _model(c: float, opts: LinearProbeConfig, seed: int) -> Pipeline:
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, max_iter=opts.max_iter, class_weight=opts.class_weight, random_state=seed),
    )


def _score(model: Pipeline, x: np.ndarray, y: np.ndarray, num_classes: int, metric: str) -> float:
    proba = model.predict_proba(x) if metric == "auroc" else None
    return classification_metrics(y, model.predict(x), proba, num_classes).get(metric, float("nan"))


def _splits(y: np.ndarray, opts: LinearProbeConfig, seed: int) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    counts = np.bincount(y)
    counts = counts[counts > 0]
    idx = np.arange(len(y))
    if np.all(np.floor(counts * opts.val_fraction) >= opts.min_val_per_class):
        tr, va = train_test_split(idx, test_size=opts.val_fraction, stratify=y, random_state=seed)
        return "holdout", [(tr, va)]
    k = int(min(opts.max_folds, counts.min()))
    if k >= 2:
        skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        return f"kfold{k}", list(skf.split(idx, y))
    return "default", []


def fit_linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    opts: LinearProbeConfig | None = None,
    seed: int = 0,
) -> ProbeResult:
    """Choose ``C`` on labelled data only, refit on all of it, predict the test set."""
    opts = opts or LinearProbeConfig()
    y_train = np.asarray(y_train)
    if len(np.unique(y_train)) < 2:
        raise ValueError("a linear probe needs at least two classes in its training labels")
    grid: Sequence[float] = sorted(opts.c_grid)
    how, splits = _splits(y_train, opts, seed)
    best_c, best = float(grid[len(grid) // 2]), float("nan")
    if splits:
        scores = []
        for c in grid:
            fold = []
            for tr, va in splits:
                if len(np.unique(y_train[tr])) < 2:
                    continue
                m = _model(c, opts, seed).fit(x_train[tr], y_train[tr])
                fold.append(_score(m, x_train[va], y_train[va], num_classes, opts.select_metric))
            scores.append(float(np.mean(fold)) if fold else float("-inf"))
        # Ties go to the stronger regularisation (earlier in an ascending grid).
        i = int(np.argmax(scores))
        best_c, best = float(grid[i]), scores[i]
    model = _model(best_c, opts, seed).fit(x_train, y_train)
    proba = np.zeros((len(x_test), num_classes))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return ProbeResult(pred=proba.argmax(1), proba=proba, c=best_c, val_score=best, selection=how)
