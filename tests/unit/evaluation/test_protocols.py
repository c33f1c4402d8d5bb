"""The frozen-feature protocols: labelled splits and the kNN / linear-probe loop over fractions and seeds."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config.eval import BackboneEntryConfig, KnnConfig, LinearProbeConfig
from pipeline.evaluation.backbones import resolve_backbones
from pipeline.evaluation.dataset import Task
from pipeline.evaluation.fractions import nested_label_subsets
from pipeline.evaluation.knn import knn_classify
from pipeline.evaluation.metrics import classification_metrics
from pipeline.evaluation.protocols import frozen_protocols, task_splits

KNN = KnnConfig(k=5, temperature=0.07)
PROBE = LinearProbeConfig(c_grid=(0.1, 1.0))
PIXELS = resolve_backbones([BackboneEntryConfig("pixels", arch="raw_pixels", img_size=8)], seed=0)[0][0]


def _data(n: int = 80, shift: float = 4.0) -> tuple[np.ndarray, Task, np.ndarray]:
    """Two feature blobs ``shift`` apart per axis; every 7th sample unlabelled, every 5th a test sample."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    feats = rng.normal(size=(n, 8)) + shift * np.eye(8)[y]
    y[::7] = -1
    return feats, Task("t", ["a", "b"], y), np.arange(n) % 5 == 0


def test_task_splits_leave_out_unlabelled_samples() -> None:
    task = Task("t", ["a", "b"], np.array([0, 1, -1, 0, 1, -1]))
    train, test = task_splits(task, np.array([False, False, False, True, True, True]))
    np.testing.assert_array_equal(train, [0, 1])
    np.testing.assert_array_equal(test, [3, 4])


def test_one_row_per_protocol_fraction_and_seed_on_the_nested_subsets() -> None:
    feats, task, is_test = _data()
    rows = frozen_protocols(PIXELS, feats, task, is_test, [0.25, 1.0], [0, 1], 2, KNN, PROBE)
    assert len(rows) == 2 * 2 * 2
    train_idx, _ = task_splits(task, is_test)
    for seed in (0, 1):
        sizes = {f: len(i) for f, i in nested_label_subsets(task.y, train_idx, [0.25, 1.0], seed, 2).items()}
        got = {(r["protocol"], r["fraction"]): r["n_labels"] for r in rows if r["seed"] == seed}
        assert got == {(p, f): sizes[f] for p in ("knn", "linear_probe") for f in (0.25, 1.0)}
    assert {(r["backbone"], r["role"], r["task"]) for r in rows} == {("pixels", "baseline", "t")}
    probe_rows = [r for r in rows if r["protocol"] == "linear_probe"]
    assert all(r["probe_c"] in PROBE.c_grid and r["probe_selection"] for r in probe_rows)
    assert not any("probe_c" in r for r in rows if r["protocol"] == "knn")
    # Separable blobs: both protocols classify the labelled test samples almost perfectly.
    assert min(r["balanced_accuracy"] for r in rows) > 0.9 and min(r["auroc"] for r in rows) > 0.95


def test_a_disabled_protocol_gives_no_rows() -> None:
    feats, task, is_test = _data()
    knn_only = frozen_protocols(PIXELS, feats, task, is_test, [1.0], [0], 1, KNN, None)
    probe_only = frozen_protocols(PIXELS, feats, task, is_test, [1.0], [0], 1, None, PROBE)
    assert [r["protocol"] for r in knn_only] == ["knn"] and [r["protocol"] for r in probe_only] == ["linear_probe"]
    assert frozen_protocols(PIXELS, feats, task, is_test, [1.0], [0], 1, None, None) == []
    assert knn_only[0]["n_labels"] == len(task_splits(task, is_test)[0])  # 100 %: every labelled training sample


def test_knn_row_scores_the_subset_against_the_labelled_test_samples() -> None:
    feats, task, is_test = _data(shift=1.0)  # overlapping blobs: scores well away from 0 and 1
    (row,) = frozen_protocols(PIXELS, feats, task, is_test, [0.25], [1], 2, KNN, None)
    train_idx, test_idx = task_splits(task, is_test)
    idx = nested_label_subsets(task.y, train_idx, [0.25], 1, 2)[0.25]
    pred, proba = knn_classify(feats[idx], task.y[idx], feats[test_idx], 2, k=5, temperature=0.07)
    expected = classification_metrics(task.y[test_idx], pred, proba, 2)
    assert 0.0 < expected["accuracy"] < 1.0
    assert {m: row[m] for m in expected} == pytest.approx(expected)
