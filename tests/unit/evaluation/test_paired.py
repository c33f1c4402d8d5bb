"""Paired differences between backbones on the same folds."""

from __future__ import annotations

import math

import numpy as np

from pipeline.evaluation.intervals import cv_interval
from pipeline.evaluation.paired import paired_interval, paired_table


def _rows(backbone: str, protocol: str, scores: np.ndarray, **extra: float) -> list[dict]:
    return [
        {
            "backbone": backbone,
            "task": "defect",
            "protocol": protocol,
            "fraction": 1.0,
            "seed": i // 5,
            "fold": i % 5,
            "n_test": 500,
            "n_pool": 2000,
            "auroc": float(s),
            **extra,
        }
        for i, s in enumerate(scores)
    ]


def test_the_fold_spread_cancels_in_the_paired_difference() -> None:
    rng = np.random.default_rng(0)
    folds = 0.8 + 0.08 * rng.standard_normal(15)  # what the groups of each fold do to every backbone
    gap = 0.01 + 0.002 * rng.standard_normal(15)
    rows = _rows("a", "knn", folds + gap) + _rows("b", "knn", folds)
    iv = paired_interval(rows, "defect", "auroc", ("a", "knn"), ("b", "knn"))
    assert iv is not None and iv.n == 15
    want = cv_interval(gap, [i // 5 for i in range(15)], 500 / 2000)
    assert math.isclose(iv.mean, want.mean) and math.isclose(iv.se, want.se)
    # Far tighter than the level's own interval, which carries the fold spread.
    level = cv_interval(folds + gap, [i // 5 for i in range(15)], 500 / 2000)
    assert iv.se < level.se / 10
    assert iv.low > 0  # a consistent 0.01 gain is resolved


def test_only_folds_both_sides_have_count() -> None:
    a = _rows("a", "knn", np.full(15, 0.8))
    b = _rows("b", "knn", np.full(15, 0.7))[:1]
    assert paired_interval(a + b, "defect", "auroc", ("a", "knn"), ("b", "knn")) is None
    b = _rows("b", "knn", np.array([0.7, np.nan, 0.7, 0.7, 0.7]))
    iv = paired_interval(a + b, "defect", "auroc", ("a", "knn"), ("b", "knn"))
    assert iv is not None and iv.n == 4 and math.isclose(iv.mean, 0.1)


def test_the_table_has_a_row_per_domain_and_baseline() -> None:
    rng = np.random.default_rng(1)
    base = 0.8 + 0.05 * rng.standard_normal(15)
    rows = _rows("domain", "knn", base + 0.02) + _rows("lite0", "knn", base) + _rows("pixels", "knn", base - 0.1)
    lines = paired_table(rows, "defect", "auroc", ["domain"], ["lite0", "pixels"], ["knn", "linear_probe"])
    assert lines[0].startswith("| backbone | minus | knn | linear probe |")
    assert lines[2].startswith("| domain | lite0 | +0.020 [") and lines[2].endswith("| n/a |")
    assert lines[3].startswith("| domain | pixels | +0.120 [")


def test_a_fixed_split_gets_no_cross_validation_correction() -> None:
    rng = np.random.default_rng(2)
    gap = 0.01 + 0.003 * rng.standard_normal(5)
    rows = _rows("a", "linear_probe", 0.8 + gap) + _rows("b", "linear_probe", np.full(5, 0.8))
    for r in rows:  # one row per seed, fold 0: the recipe's fixed split under five label-draw seeds
        r["seed"], r["fold"] = r["fold"], 0
    iv = paired_interval(rows, "defect", "auroc", ("a", "linear_probe"), ("b", "linear_probe"))
    assert iv is not None
    assert math.isclose(iv.se, float(np.std(gap, ddof=1) / math.sqrt(5)), rel_tol=1e-9)
