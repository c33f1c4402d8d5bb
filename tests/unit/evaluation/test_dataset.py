"""The labelled evaluation set read back from ingest-style ``eval`` shards and manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.manifest import read_manifest
from pipeline.evaluation.dataset import load_eval_set
from tests.unit.pretrain_tiny import write_shards

N = 12


def _retask(folder: Path, tasks: dict) -> None:
    """Rewrite the folder's manifest with other ``extra.tasks`` (the shards stay as they are)."""
    m = read_manifest(folder)
    m.extra = {"tasks": tasks}
    m.write(folder)


def test_ids_sorted_with_labels_splits_and_images_of_each_sample(tmp_path: Path) -> None:
    ids = write_shards(tmp_path, N, per_shard=5, seed=3, labels=True, stage="ingest/eval")
    data = load_eval_set(tmp_path)
    assert data.ids == sorted(ids) and data.manifest_hash == "tiny3"
    # write_shards: sample i is stripe kind i % 2 ("h"/"v") and a test sample when i % 3 == 0.
    where = [ids.index(k) for k in data.ids]
    task = data.tasks["stripe"]
    assert task.classes == ["h", "v"] and task.num_classes == 2 and task.primary
    np.testing.assert_array_equal(task.y, [i % 2 for i in where])
    np.testing.assert_array_equal(data.is_test, [i % 3 == 0 for i in where])
    np.testing.assert_array_equal(data.test_idx, np.flatnonzero(data.is_test))
    assert sorted([*data.train_idx, *data.test_idx]) == list(range(N))
    assert all(im.mode == "RGB" and im.size == (24, 24) for im in data.images) and len(data.images) == N
    assert data.primary_task() == "stripe"


def test_limit_keeps_the_first_ids(tmp_path: Path) -> None:
    ids = write_shards(tmp_path, N, per_shard=5, labels=True, stage="ingest/eval")
    data = load_eval_set(tmp_path, limit=4)
    assert data.ids == sorted(ids)[:4] and len(data.images) == 4 and len(data.tasks["stripe"].y) == 4


def test_a_task_whose_column_is_absent_is_unlabelled_and_primary_is_the_flagged_one(tmp_path: Path) -> None:
    ids = write_shards(tmp_path, N, per_shard=5, labels=True, stage="ingest/eval")
    _retask(
        tmp_path,
        {
            "grade": {"column": "grade", "classes": ["a", "b"]},
            "kind": {"column": "stripe", "classes": ["v", "h"], "primary": True},
        },
    )
    data = load_eval_set(tmp_path)
    assert (data.tasks["grade"].y == -1).all() and not data.tasks["grade"].primary
    assert data.primary_task() == "kind"
    # The class order of the manifest defines the ids: "v" is now 0.
    np.testing.assert_array_equal(data.tasks["kind"].y, [1 - ids.index(k) % 2 for k in data.ids])


def test_unknown_class_missing_split_and_missing_tasks_are_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="has not finished"):
        load_eval_set(tmp_path / "nothing")
    labelled, unlabelled = tmp_path / "labelled", tmp_path / "unlabelled"
    write_shards(labelled, N, per_shard=5, labels=True, stage="ingest/eval")
    write_shards(unlabelled, N, per_shard=5, labels=False, stage="ingest/eval")
    with pytest.raises(ValueError, match=r"no extra\.tasks"):
        load_eval_set(unlabelled)
    _retask(unlabelled, {"stripe": {"column": "stripe", "classes": ["h", "v"]}})
    with pytest.raises(ValueError, match=r"labels\.split is None"):
        load_eval_set(unlabelled)
    _retask(labelled, {"stripe": {"column": "stripe", "classes": ["h"]}})
    with pytest.raises(ValueError, match=r"task stripe label 'v' is not one of \['h'\]"):
        load_eval_set(labelled)


def test_a_task_carries_its_normal_class(tmp_path: Path) -> None:
    write_shards(tmp_path, N, per_shard=5, labels=True, stage="ingest/eval")
    _retask(
        tmp_path,
        {
            "kind": {"column": "stripe", "classes": ["h", "v"], "primary": True, "normal": "h"},
            "other": {"column": "stripe", "classes": ["h", "v"]},
        },
    )
    data = load_eval_set(tmp_path)
    assert data.tasks["kind"].normal == "h" and data.tasks["other"].normal is None
