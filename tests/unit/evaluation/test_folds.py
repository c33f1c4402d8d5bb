"""Evaluation folds: grouped and stratified cross-validation over labelled images, and the fixed split."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.folds import evaluation_folds


def _data(n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = (np.arange(n) % 4 == 0).astype(int)
    y[::9] = -1  # unlabelled
    return y, np.arange(n) // 10, np.arange(n) % 5 == 0


def test_grouped_folds_cover_every_labelled_image_once_and_never_split_a_group() -> None:
    y, groups, is_test = _data()
    folds = evaluation_folds(y, groups, is_test, "grouped_cv", 5, seed=0)
    assert [f.fold for f in folds] == [0, 1, 2, 3, 4] and {f.seed for f in folds} == {0}
    tested = np.concatenate([f.test for f in folds])
    np.testing.assert_array_equal(np.sort(tested), np.flatnonzero(y >= 0))
    for f in folds:
        assert not set(groups[f.train]) & set(groups[f.test])
        assert len(np.intersect1d(f.train, f.test)) == 0 and len(f.train) + len(f.test) == (y >= 0).sum()
        assert 0.15 < y[f.test].mean() < 0.35  # stratified: the 1-in-4 share of class 1 stays
    other = evaluation_folds(y, groups, is_test, "grouped_cv", 5, seed=1)
    assert any(not np.array_equal(a.test, b.test) for a, b in zip(folds, other))  # another seed, another partition
    again = evaluation_folds(y, groups, is_test, "grouped_cv", 5, seed=0)
    assert all(np.array_equal(a.test, b.test) for a, b in zip(folds, again))


def test_stratified_folds_ignore_groups_and_the_split_protocol_is_the_fixed_split() -> None:
    y, groups, is_test = _data()
    folds = evaluation_folds(y, groups, is_test, "stratified_cv", 5, seed=0)
    assert any(set(groups[f.train]) & set(groups[f.test]) for f in folds)
    (split,) = evaluation_folds(y, groups, is_test, "split", 5, seed=3)
    labelled = y >= 0
    np.testing.assert_array_equal(split.test, np.flatnonzero(labelled & is_test))
    np.testing.assert_array_equal(split.train, np.flatnonzero(labelled & ~is_test))
    assert (split.seed, split.fold) == (3, 0)


def test_bad_settings_raise() -> None:
    y, groups, is_test = _data()
    with pytest.raises(ValueError, match=r"eval\.protocol"):
        evaluation_folds(y, groups, is_test, "random", 5, 0)
    with pytest.raises(ValueError, match="groups"):
        evaluation_folds(y, np.arange(len(y)) // 100, is_test, "grouped_cv", 5, 0)
