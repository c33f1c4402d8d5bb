"""The labelled evaluation set read back from ingest-style ``eval`` shards and manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.manifest import read_manifest
from pipeline.evaluation.dataset import EvalSet, group_ids, load_eval_set
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


def test_groups_and_heldout_default_to_one_image_per_group_all_held_out(tmp_path: Path) -> None:
    write_shards(tmp_path, N, per_shard=5, labels=True, stage="ingest/eval")
    data = load_eval_set(tmp_path)
    assert data.groups.dtype == np.int64 and data.heldout.dtype == bool
    np.testing.assert_array_equal(data.groups, np.arange(N))
    assert data.heldout.all() and data.heldout.shape == (N,)


def test_groups_and_heldout_come_from_the_sample_labels(tmp_path: Path) -> None:
    # Sample i: module i // 4 (as text, the way a labels CSV gives it); every third one also in the pool.
    ids = write_shards(
        tmp_path,
        N,
        per_shard=5,
        labels=True,
        stage="ingest/eval",
        extra_labels=lambda i: {"group": str(10 * (i // 4)), "heldout": i % 3 != 0},
    )
    data = load_eval_set(tmp_path)
    where = [ids.index(k) for k in data.ids]
    # "0" < "10" < "20" numerically, so the ids are the module numbers in order.
    np.testing.assert_array_equal(data.groups, [i // 4 for i in where])
    np.testing.assert_array_equal(data.heldout, [i % 3 != 0 for i in where])


def test_a_sample_without_group_is_its_own_group_and_text_heldout_is_parsed(tmp_path: Path) -> None:
    ids = write_shards(
        tmp_path,
        N,
        per_shard=5,
        labels=True,
        stage="ingest/eval",
        extra_labels=lambda i: {"group": "b"} | ({"heldout": "false"} if i == 0 else {}) if i < 3 else {},
    )
    data = load_eval_set(tmp_path)
    g = {k: int(v) for k, v in zip(data.ids, data.groups)}
    assert g[ids[0]] == g[ids[1]] == g[ids[2]] == 0
    assert sorted(g[k] for k in ids[3:]) == list(range(1, N - 2))
    assert data.heldout.tolist() == [k != ids[0] for k in data.ids]


def test_a_bad_heldout_value_names_the_sample(tmp_path: Path) -> None:
    write_shards(tmp_path, 3, per_shard=5, labels=True, stage="ingest/eval", extra_labels=lambda i: {"heldout": "?"})
    with pytest.raises(ValueError, match=r"labels\.heldout is '\?', not true/false"):
        load_eval_set(tmp_path)


def test_evalset_built_by_hand_gets_the_defaults_and_checks_lengths() -> None:
    e = EvalSet(["a", "b"], [], np.zeros(2, bool), {}, "h")
    assert e.groups.tolist() == [0, 1] and e.heldout.tolist() == [True, True]
    with pytest.raises(ValueError, match="2 ids but groups"):
        EvalSet(["a", "b"], [], np.zeros(2, bool), {}, "h", groups=np.zeros(3, np.int64))


def test_group_ids() -> None:
    assert group_ids(["m2", None, "m10", "m2", None]).tolist() == [1, 2, 0, 1, 3]
    assert group_ids(["2", "10", "2"]).tolist() == [0, 1, 0]


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
