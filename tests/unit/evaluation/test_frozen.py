"""The frozen-feature loop: kNN and linear probe on every fold at every label fraction, held-out scores."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.eval import KnnConfig, LinearProbeConfig
from pipeline.evaluation.dataset import Task
from pipeline.evaluation.folds import evaluation_folds
from pipeline.evaluation.fractions import nested_label_subsets
from pipeline.evaluation.frozen import frozen_protocols
from pipeline.evaluation.knn import knn_classify
from pipeline.evaluation.metrics import classification_metrics

KNN = KnnConfig(k=5, temperature=0.07)
PROBE = LinearProbeConfig(c_grid=(0.1, 1.0))


def _data(n: int = 80, shift: float = 4.0) -> tuple[np.ndarray, Task, np.ndarray]:
    """Two feature blobs ``shift`` apart per axis; every 7th sample unlabelled; groups of 4 consecutive samples."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    feats = rng.normal(size=(n, 8)) + shift * np.eye(8)[y]
    y[::7] = -1
    return feats, Task("t", ["a", "b"], y), np.arange(n) // 4


def _folds(task: Task, groups: np.ndarray, seeds: list[int], k: int = 4) -> list:
    return [f for s in seeds for f in evaluation_folds(task.y, groups, np.zeros(len(groups), bool), "grouped_cv", k, s)]


def test_one_row_per_protocol_fold_and_fraction_on_nested_subsets_of_the_training_fold() -> None:
    feats, task, groups = _data()
    folds = _folds(task, groups, [0, 1])
    rows = frozen_protocols("pixels", "baseline", feats, task, folds, [0.25, 1.0], 2, KNN, PROBE)
    assert len(rows) == 2 * 4 * 2 * 2  # seeds x folds x fractions x protocols
    for f in folds:
        subsets = nested_label_subsets(task.y, f.train, [0.25, 1.0], f.label_seed, 2)
        got = {
            (r["protocol"], r["fraction"]): r["n_labels"] for r in rows if (r["seed"], r["fold"]) == (f.seed, f.fold)
        }
        assert got == {(p, fr): len(subsets[fr]) for p in ("knn", "linear_probe") for fr in (0.25, 1.0)}
        assert {r["n_test"] for r in rows if (r["seed"], r["fold"]) == (f.seed, f.fold)} == {len(f.test)}
        assert {r["n_pool"] for r in rows if (r["seed"], r["fold"]) == (f.seed, f.fold)} == {len(f.train)}
    assert {(r["backbone"], r["role"], r["task"]) for r in rows} == {("pixels", "baseline", "t")}
    assert all(r["probe_c"] in PROBE.c_grid for r in rows if r["protocol"] == "linear_probe")
    assert not any("heldout_auroc" in r for r in rows)  # every image held out: no separate columns
    # Separable blobs: both protocols rank the test folds almost perfectly, and classify them with all labels.
    assert min(r["auroc"] for r in rows) > 0.9
    assert min(r["balanced_accuracy"] for r in rows if r["fraction"] == 1.0) > 0.9


def test_knn_row_scores_the_subset_against_the_fold_with_centring_and_prior_correction() -> None:
    feats, task, groups = _data(shift=1.0)  # overlapping blobs: scores well away from 0 and 1
    fold = _folds(task, groups, [1])[2]
    (row,) = frozen_protocols("pixels", "baseline", feats, task, [fold], [0.25], 2, KNN, None)
    idx = nested_label_subsets(task.y, fold.train, [0.25], fold.label_seed, 2)[0.25]
    pred, proba = knn_classify(
        feats[idx], task.y[idx], feats[fold.test], 2, k=5, temperature=0.07, centre=True, prior_correction=True
    )
    expected = classification_metrics(task.y[fold.test], pred, proba, 2)
    assert 0.0 < expected["accuracy"] < 1.0
    assert {m: row[m] for m in expected} == pytest.approx(expected)


def test_heldout_scores_use_only_the_heldout_test_images() -> None:
    feats, task, groups = _data(shift=1.0)
    fold = _folds(task, groups, [0])[0]
    heldout = np.arange(len(groups)) % 3 != 0  # a third was in the pretraining pool
    (row,) = frozen_protocols("pixels", "baseline", feats, task, [fold], [1.0], 1, KNN, None, heldout)
    idx = nested_label_subsets(task.y, fold.train, [1.0], fold.label_seed, 1)[1.0]
    pred, proba = knn_classify(
        feats[idx], task.y[idx], feats[fold.test], 2, k=5, temperature=0.07, centre=True, prior_correction=True
    )
    keep = heldout[fold.test]
    expected = classification_metrics(task.y[fold.test][keep], pred[keep], proba[keep], 2)
    assert {m: row[f"heldout_{m}"] for m in expected} == pytest.approx(expected)


def test_a_disabled_protocol_gives_no_rows() -> None:
    feats, task, groups = _data()
    folds = _folds(task, groups, [0])[:1]
    assert frozen_protocols("p", "baseline", feats, task, folds, [1.0], 1, None, None) == []
    (row,) = frozen_protocols("p", "baseline", feats, task, folds, [1.0], 1, KNN, None)
    assert row["protocol"] == "knn" and row["n_labels"] == len(folds[0].train)


def test_a_training_fold_with_one_class_predicts_that_class_instead_of_failing() -> None:
    from pipeline.evaluation.folds import Fold

    feats, _, _ = _data()
    y = np.r_[np.zeros(40, dtype=int), np.arange(40) % 2]  # class 1 only in the second half
    task = Task("t", ["a", "b"], y)
    fold = Fold(0, 0, np.arange(40), np.arange(40, 80))  # training part: class 0 only
    (row,) = frozen_protocols("p", "baseline", feats, task, [fold], [1.0], 1, None, PROBE)
    assert row["probe_selection"] == "one_class" and row["auroc"] == 0.5 and row["balanced_accuracy"] == 0.5
