"""The fine-tuning loop's labelled splits (the frozen loop: test_frozen.py)."""

from __future__ import annotations

import numpy as np

from pipeline.evaluation.dataset import Task
from pipeline.evaluation.protocols import task_splits


def test_task_splits_leave_out_unlabelled_samples() -> None:
    task = Task("t", ["a", "b"], np.array([0, 1, -1, 0, 1, -1]))
    train, test = task_splits(task, np.array([False, False, False, True, True, True]))
    np.testing.assert_array_equal(train, [0, 1])
    np.testing.assert_array_equal(test, [3, 4])
