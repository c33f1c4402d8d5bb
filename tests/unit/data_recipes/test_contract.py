"""The recipe contract: outputs, labels CSV, stratified and group splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from data_recipes.contract import (
    RecipeOutput,
    TaskSpec,
    group_split,
    parse_heldout,
    read_labels,
    stratified_split,
    write_labels,
)


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
        ("key,split,group\nx,train,m1\ny,test, \n", r"labels.csv:3: group is empty"),
        (
            "key,split,heldout\nx,train,true\ny,test,maybe\n",
            r"labels.csv:3: heldout must be true or false, got 'maybe'",
        ),
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


def test_group_and_heldout_columns_are_read_typed(tmp_path: Path) -> None:
    rows = [
        {"key": "a.png", "split": "train", "defect": "yes", "group": "m1", "heldout": True},
        {"key": "b.png", "split": "test", "defect": "no", "group": 7, "heldout": False},
    ]
    write_labels(tmp_path / "labels.csv", rows)
    assert (tmp_path / "labels.csv").read_text().splitlines()[1] == "a.png,train,yes,m1,true"
    assert read_labels(tmp_path / "labels.csv") == {
        "a.png": {"split": "train", "defect": "yes", "group": "m1", "heldout": True},
        "b.png": {"split": "test", "defect": "no", "group": "7", "heldout": False},
    }


@pytest.mark.parametrize(("value", "want"), [("true", True), ("FALSE", False), (" 1 ", True), ("no", False)])
def test_parse_heldout(value: str, want: bool) -> None:
    assert parse_heldout(value, "here") is want


def test_group_split_keeps_groups_whole_and_shares_close() -> None:
    # 30 groups of 1..5 members, two strata.
    keys, groups, strata = [], [], []
    for g in range(30):
        for m in range(1 + g % 5):
            keys.append(f"g{g}_{m}")
            groups.append(f"g{g}")
            strata.append("mono" if g < 12 else "poly")
    split = group_split(keys, groups, strata, 0.3, seed=3)
    assert split == group_split(keys[::-1], groups[::-1], strata[::-1], 0.3, seed=3)
    assert split != group_split(keys, groups, strata, 0.3, seed=4)
    for g in set(groups):
        assert len({split[k] for k, gg in zip(keys, groups) if gg == g}) == 1
    for s in ("mono", "poly"):
        members = [k for k, st in zip(keys, strata) if st == s]
        share = sum(split[k] == "test" for k in members) / len(members)
        assert abs(share - 0.3) < 0.1


def test_group_split_puts_a_group_on_each_side_when_it_can() -> None:
    assert sorted(group_split(["a", "b"], ["1", "2"], ["x", "x"], 0.01, seed=0).values()) == ["test", "train"]
    assert sorted(group_split(["a", "b"], ["1", "2"], ["x", "x"], 0.99, seed=0).values()) == ["test", "train"]
    assert group_split(["a", "b"], ["1", "1"], ["x", "x"], 0.5, seed=0) in (
        {"a": "test", "b": "test"},
        {"a": "train", "b": "train"},
    )


def test_a_task_names_its_normal_class_or_none() -> None:
    spec = TaskSpec(column="defect", classes=["ok", "bad"], normal="ok")
    assert (
        RecipeOutput.from_dict(RecipeOutput(sources={"pool": ["/p"]}, tasks={"d": spec}).to_dict()).tasks["d"] == spec
    )
    assert TaskSpec(column="t", classes=["a", "b"]).normal is None
    with pytest.raises(ValueError, match="normal class 'good' is not one of"):
        TaskSpec(column="defect", classes=["ok", "bad"], normal="good")
