import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from pipeline.evaluation.metrics import classification_metrics


def test_metrics_match_sklearn_on_imbalanced_binary() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.25).astype(int)
    score = y * 0.6 + rng.random(200) * 0.7
    proba = np.stack([1 - score, score], axis=1)
    pred = (score > 0.5).astype(int)
    m = classification_metrics(y, pred, proba, 2)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, score))


def test_majority_predictor_is_exposed_by_balanced_metrics() -> None:
    y = np.array([0] * 9 + [1])
    pred = np.zeros(10, dtype=int)
    m = classification_metrics(y, pred, None, 2)
    assert m["accuracy"] == pytest.approx(0.9)
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    # Class 1 is never predicted: its F1 is 0, so macro-F1 = (F1_0 + 0) / 2 with F1_0 = 2*0.9/(1+0.9).
    assert m["macro_f1"] == pytest.approx((2 * 0.9 / 1.9) / 2)
    assert "auroc" not in m


def test_multiclass_macro_f1_counts_absent_classes_and_has_no_auroc() -> None:
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 1])
    m = classification_metrics(y, pred, np.eye(3)[pred], 3)
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == pytest.approx(2 / 3)  # class 2 has no support and no predictions: F1 = 0
    assert "auroc" not in m


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        classification_metrics(np.zeros(3), np.zeros(4), None, 2)


def test_auroc_with_ties_and_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=300)
    score = np.round(rng.random(300) + 0.3 * y, 1)  # heavy ties
    m = classification_metrics(y, (score > 0.6).astype(int), np.stack([1 - score, score], 1), 2)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, score))
    y3 = rng.integers(0, 4, size=300)
    p3 = np.where(rng.random(300) < 0.6, y3, rng.integers(0, 4, size=300))
    m3 = classification_metrics(y3, p3, None, 4)
    assert m3["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y3, p3))
    assert m3["macro_f1"] == pytest.approx(f1_score(y3, p3, average="macro"))
    assert m3["accuracy"] == pytest.approx(accuracy_score(y3, p3))
