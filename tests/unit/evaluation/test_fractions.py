import itertools

import numpy as np
import pytest

from pipeline.evaluation.fractions import nested_label_subsets

FRACTIONS = [0.01, 0.05, 0.1, 0.25, 1.0]


def _data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = (rng.random(800) < 0.27).astype(int)  # imbalanced, like ELPV defect
    is_test = rng.random(800) < 0.3
    return y, np.flatnonzero(~is_test), np.flatnonzero(is_test)


def test_subsets_are_stratified_with_one_per_class_minimum() -> None:
    y, train, _ = _data()
    subs = nested_label_subsets(y, train, FRACTIONS, seed=0)
    for f, idx in subs.items():
        for c in (0, 1):
            n_c = int((y[train] == c).sum())
            assert (y[idx] == c).sum() == max(1, round(f * n_c))
    assert set(subs[1.0]) == set(train)


def test_subsets_are_nested_seeded_and_disjoint_from_test() -> None:
    y, train, test = _data()
    a = nested_label_subsets(y, train, FRACTIONS, seed=3)
    b = nested_label_subsets(y, train, FRACTIONS, seed=3)
    c = nested_label_subsets(y, train, FRACTIONS, seed=4)
    for f in FRACTIONS:
        np.testing.assert_array_equal(a[f], b[f])
        assert not set(a[f]) & set(test)
    for small, big in itertools.pairwise(FRACTIONS):
        assert set(a[small]) <= set(a[big])
    assert not np.array_equal(a[0.1], c[0.1])


def test_a_fraction_does_not_depend_on_the_other_fractions_requested() -> None:
    y, train, _ = _data()
    alone = nested_label_subsets(y, train, [0.1], seed=7)[0.1]
    together = nested_label_subsets(y, train, FRACTIONS, seed=7)[0.1]
    np.testing.assert_array_equal(alone, together)


def test_bad_fraction_raises() -> None:
    y, train, _ = _data()
    with pytest.raises(ValueError, match="outside"):
        nested_label_subsets(y, train, [0.0], seed=0)
    with pytest.raises(ValueError, match="outside"):
        nested_label_subsets(y, train, [1.5], seed=0)
