"""Confidence intervals of a cross-validated score.

The folds of a repeated k-fold cross-validation share data (each training set overlaps the
others; each image is tested once per repeat), so their scores are correlated and
``std / sqrt(folds x repeats)`` would be far too small. We use Nadeau and Bengio's
corrected resampled variance (Machine Learning 52, 2003)::

    var(mean) = (1 / J + n_test / n_train) * s^2

where ``s^2`` is the variance of the ``J = folds x repeats`` fold scores and ``n_test /
n_train`` the fold's test-to-training size ratio (``1 / (k - 1)`` for k folds). The second
term does not shrink with more repeats: it is the uncertainty that comes from having this
data set and no other. The part repeats do remove, how much the mean moves with another
fold partition, is the Monte Carlo standard error (std of the per-repeat means over
``sqrt(repeats)``), reported alongside.

A single fixed split (``ratio = 0``) only has label-draw seeds: its interval covers the
noise of the label subsets, not that of its test set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    """Mean of the fold scores with its corrected standard error and interval.

    Attributes:
        mean: Mean over every fold of every repeat.
        se: Corrected standard error of ``mean``.
        low: Lower end of the interval (Student t with ``J - 1`` degrees of freedom).
        high: Upper end.
        mc_se: Monte Carlo standard error over repeats (NaN with one repeat).
        n: Number of scores ``J``.
    """

    mean: float
    se: float
    low: float
    high: float
    mc_se: float
    n: int

    def describe(self, digits: int = 3) -> str:
        """``"0.861 [0.83, 0.89]"``."""
        if math.isnan(self.low):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def cv_interval(
    scores: Sequence[float],
    repeats: Sequence[int],
    test_train_ratio: float,
    confidence: float = 0.95,
) -> Interval:
    """Mean and corrected interval of fold scores.

    Args:
        scores: One score per fold (NaNs are dropped).
        repeats: The repeat (seed) of each score, for the Monte Carlo error.
        test_train_ratio: ``n_test / n_train`` of one fold; ``0`` for a fixed split scored under several seeds.
        confidence: Level of the interval.
    """
    s = np.asarray(scores, dtype=float)
    r = np.asarray(repeats)
    keep = ~np.isnan(s)
    s, r = s[keep], r[keep]
    nan = float("nan")
    if len(s) == 0:
        return Interval(nan, nan, nan, nan, nan, 0)
    mean = float(s.mean())
    if len(s) < 2:
        return Interval(mean, nan, nan, nan, nan, len(s))
    se = float(math.sqrt((1.0 / len(s) + test_train_ratio) * s.var(ddof=1)))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(s) - 1)) * se
    per_repeat = [float(s[r == k].mean()) for k in np.unique(r)]
    mc = float(np.std(per_repeat, ddof=1) / math.sqrt(len(per_repeat))) if len(per_repeat) > 1 else nan
    return Interval(mean, se, mean - half, mean + half, mc, len(s))
