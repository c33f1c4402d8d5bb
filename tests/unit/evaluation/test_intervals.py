"""Corrected cross-validation intervals (Nadeau and Bengio) and the Monte Carlo error over repeats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pipeline.evaluation.intervals import cv_interval


def test_corrected_variance_and_t_interval_by_hand() -> None:
    scores = [0.80, 0.84, 0.86, 0.90, 0.82, 0.85]
    repeats = [0, 0, 0, 1, 1, 1]
    iv = cv_interval(scores, repeats, test_train_ratio=0.25, confidence=0.95)
    s2 = np.var(scores, ddof=1)
    se = math.sqrt((1 / 6 + 0.25) * s2)
    half = stats.t.ppf(0.975, 5) * se
    assert iv.mean == pytest.approx(np.mean(scores)) and iv.se == pytest.approx(se)
    assert (iv.low, iv.high) == pytest.approx((np.mean(scores) - half, np.mean(scores) + half))
    # Monte Carlo error: std of the two repeat means over sqrt(2).
    means = [np.mean(scores[:3]), np.mean(scores[3:])]
    assert iv.mc_se == pytest.approx(np.std(means, ddof=1) / math.sqrt(2))
    # The correction keeps the error from vanishing with more repeats: the naive one is far smaller.
    assert iv.se > math.sqrt(s2 / 6) * 1.5


def test_more_repeats_shrink_only_the_first_term() -> None:
    base = 0.8 + 0.03 * np.array([-1.5, -0.5, 0.0, 0.5, 1.5])
    many_scores = np.tile(base, 100)
    few = cv_interval(base, [0] * 5, 0.25)
    many = cv_interval(many_scores, np.repeat(np.arange(100), 5), 0.25)
    assert few.se == pytest.approx(np.std(base, ddof=1) * math.sqrt(1 / 5 + 0.25))
    assert many.se == pytest.approx(np.std(many_scores, ddof=1) * math.sqrt(1 / 500 + 0.25))
    # Smaller, but never below the data term sqrt(ratio) * s, however many repeats.
    assert np.std(many_scores, ddof=1) * 0.5 < many.se < few.se
    assert many.mc_se == pytest.approx(0.0)  # identical repeats: no Monte Carlo error left


def test_nans_are_dropped_and_one_score_has_no_interval() -> None:
    iv = cv_interval([0.7, float("nan")], [0, 0], 0.25)
    assert iv.mean == 0.7 and iv.n == 1 and math.isnan(iv.low) and math.isnan(iv.se)
    assert iv.describe() == "0.700"
    assert math.isnan(cv_interval([], [], 0.25).mean)
