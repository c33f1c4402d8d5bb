"""The recipe contract: outputs, labels CSV, stratified split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_recipes.contract import RecipeOutput, TaskSpec, read_labels, stratified_split, write_labels


def test_stratified_split_keeps_class_shares_and_is_reproducible() -> None:
    keys = [f"k{i}" for i in range(100)]
    strata = ["a"] * 70 + ["b"] * 20 + ["c"] * 10
    split = stratified_split(keys, strata, 0.3, seed=1)
    assert split == stratified_split(list(reversed(keys)), list(reversed(strata)), 0.3, seed=1)
    assert split != stratified_split(keys, strata, 0.3, seed=2)
    test = Counter(s for k, s in zip(keys, strata) if split[k] == "test")
    assert test == {"a": 21, "b": 6, "c": 3}


def test_every_stratum_of_two_or_more_lands_in_both_splits() -> None:
    split = stratified_split(["a1", "a2", "b1", "c1", "c2", "c3"], ["a", "a", "b", "c", "c", "c"], 0.01, seed=0)
    assert sorted(split[k] for k in ("a1", "a2")) == ["test", "train"]
    assert split["b1"] == "train"
    assert sorted(split[k] for k in ("c1", "c2", "c3")) == ["test", "train", "train"]
    split = stratified_split(["x1", "x2"], ["x", "x"], 0.99, seed=0)
    assert sorted(split.values()) == ["test", "train"]


def test_labels_round_trip(tmp_path: Path) -> None:
    rows = [{"key": "a/1.png", "split": "train", "defect": "yes"}, {"key": "2.png", "split": "test", "defect": "no"}]
    write_labels(tmp_path / "labels.csv", rows)
    assert read_labels(tmp_path / "labels.csv") == {
        "a/1.png": {"split": "train", "defect": "yes"},
        "2.png": {"split": "test", "defect": "no"},
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name,split\nx,train\n", "needs a 'key' column"),
        ("key,label\nx,a\n", "needs a 'split' column"),
        ("key,split\nx,train\ny,validation\n", r"labels.csv:3: split must be 'train' or 'test', got 'validation'"),
        ("key,split\nx,train\nx,test\n", r"labels.csv:3: key 'x' appears twice"),
    ],
)
def test_labels_csv_errors_name_file_line_and_problem(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_labels(tmp_path / "labels.csv")


def test_empty_labels_csv_is_no_labels(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("key,split\n")
    assert read_labels(tmp_path / "labels.csv") == {}


def test_recipe_output_validation_and_round_trip() -> None:
    out = RecipeOutput(
        sources={"pool": ["/p"], "eval": ["/e"]},
        labels_csv="/l.csv",
        tasks={"t": TaskSpec(column="t", classes=["a", "b"], primary=True)},
    )
    assert RecipeOutput.from_dict(out.to_dict()) == out
    with pytest.raises(ValueError, match="pool"):
        RecipeOutput(sources={"seeds": ["/s"]})
    with pytest.raises(ValueError, match="unknown recipe sources"):
        RecipeOutput(sources={"pool": ["/p"], "extra": ["/x"]})


def test_a_task_names_its_normal_class_or_none() -> None:
    spec = TaskSpec(column="defect", classes=["ok", "bad"], normal="ok")
    assert (
        RecipeOutput.from_dict(RecipeOutput(sources={"pool": ["/p"]}, tasks={"d": spec}).to_dict()).tasks["d"] == spec
    )
    assert TaskSpec(column="t", classes=["a", "b"]).normal is None
    with pytest.raises(ValueError, match="normal class 'good' is not one of"):
        TaskSpec(column="defect", classes=["ok", "bad"], normal="good")
