"""The folder recipe: a user's own domain with no code change."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from data_recipes.contract import read_labels
from data_recipes.folder.prepare import prepare
from data_recipes.folder.schema import FolderRecipe
from pipeline.app import run_pipeline
from pipeline.io.shards import iter_samples, list_shards
from tests.bad_inputs import encode, noise


def _img(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(Image.fromarray(noise(16, 16, seed=seed)), "PNG"))


def _cfg(**kw: object):
    return OmegaConf.structured(FolderRecipe(**kw))


def _class_folders(root: Path) -> None:
    for c, n in (("cracked", 6), ("clean", 4)):
        for i in range(n):
            _img(root / c / f"{i}.png", seed=100 * len(c) + i)


def test_class_subfolders_become_a_labeled_stratified_split(tmp_path: Path) -> None:
    _img(tmp_path / "pool" / "a.png", 1)
    _class_folders(tmp_path / "labeled")
    out = prepare(_cfg(pool=[str(tmp_path / "pool")], labeled=str(tmp_path / "labeled"), task="state"), tmp_path / "r")
    assert out.sources == {"pool": [str(tmp_path / "pool")], "eval": [str(tmp_path / "labeled")]}
    assert out.tasks["state"].classes == ["clean", "cracked"] and out.tasks["state"].primary
    labels = read_labels(out.labels_csv)
    assert set(labels) == {f"cracked/{i}.png" for i in range(6)} | {f"clean/{i}.png" for i in range(4)}
    test = {k for k, v in labels.items() if v["split"] == "test"}
    assert sum(k.startswith("cracked") for k in test) == 2 and sum(k.startswith("clean") for k in test) == 1
    assert all(v["state"] == k.split("/")[0] for k, v in labels.items())
    assert out.tasks["state"].normal is None


def test_the_normal_class_names_the_primary_tasks_defect_free_folder(tmp_path: Path) -> None:
    _img(tmp_path / "pool" / "a.png", 1)
    _class_folders(tmp_path / "labeled")
    kw = {"pool": [str(tmp_path / "pool")], "labeled": str(tmp_path / "labeled"), "task": "state"}
    assert prepare(_cfg(**kw, normal="clean"), tmp_path / "r").tasks["state"].normal == "clean"
    with pytest.raises(ValueError, match="normal class 'ok'"):
        prepare(_cfg(**kw, normal="ok"), tmp_path / "r2")


def test_labels_csv_with_its_own_split_and_tasks(tmp_path: Path) -> None:
    _img(tmp_path / "pool" / "a.png", 1)
    for i in range(4):
        _img(tmp_path / "labeled" / f"{i}.png", 10 + i)
    with open(tmp_path / "l.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["key", "split", "grade", "line"])
        w.writerows([[f"{i}.png", "test" if i == 0 else "train", "ab"[i % 2], "x"] for i in range(4)])
    out = prepare(
        _cfg(pool=[str(tmp_path / "pool")], labeled=str(tmp_path / "labeled"), labels_csv=str(tmp_path / "l.csv")),
        tmp_path / "r",
    )
    assert list(out.tasks) == ["grade", "line"] and out.tasks["grade"].primary and not out.tasks["line"].primary
    assert read_labels(out.labels_csv)["0.png"] == {"split": "test", "grade": "a", "line": "x"}


def test_labels_csv_key_that_names_no_file_is_an_error(tmp_path: Path) -> None:
    _img(tmp_path / "pool" / "a.png", 1)
    _img(tmp_path / "labeled" / "0.png", 2)
    (tmp_path / "l.csv").write_text("key,grade\n0.png,a\nlabeled/0.png,b\n")
    with pytest.raises(ValueError, match=r"1 keys name no file.*labeled/0.png"):
        prepare(
            _cfg(pool=[str(tmp_path / "pool")], labeled=str(tmp_path / "labeled"), labels_csv=str(tmp_path / "l.csv")),
            tmp_path / "r",
        )


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"pool": []}, "data_recipe.pool is empty"),
        ({"pool": ["{tmp}/nope"]}, "data_recipe.pool: .*nope does not exist"),
        ({"pool": ["{tmp}/pool"], "seeds": ["{tmp}/nope"]}, "data_recipe.seeds: .*nope does not exist"),
        ({"pool": ["{tmp}/pool"], "labeled": "{tmp}/pool"}, "expected class sub-folders"),
    ],
)
def test_errors_name_the_config_key(tmp_path: Path, kw: dict, match: str) -> None:
    _img(tmp_path / "pool" / "a.png", 1)
    kw = {
        k: ([x.format(tmp=tmp_path) for x in v] if isinstance(v, list) else v.format(tmp=tmp_path))
        for k, v in kw.items()
    }
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        prepare(_cfg(**kw), tmp_path / "r")


def test_folder_recipe_through_the_pipeline(tmp_path: Path, compose_cfg: Callable) -> None:
    for i in range(5):
        _img(tmp_path / "raw" / f"{i}.png", i)
    _img(tmp_path / "seeds" / "s.png", 99)
    _class_folders(tmp_path / "labeled")
    cfg = compose_cfg(
        [
            "data_recipe=folder",
            "data_recipe.name=wafers",
            "stage=ingest",
            "tracking=off",
            "ingest.workers=1",
            f"data_recipe.pool=[{tmp_path / 'raw'}]",
            f"data_recipe.seeds=[{tmp_path / 'seeds'}]",
            f"data_recipe.labeled={tmp_path / 'labeled'}",
        ],
        root=tmp_path / "out",
    )
    m = run_pipeline(cfg)["ingest"]
    assert {k: v for k, v in m.counts.items() if k.endswith(".accepted")} == {
        "pool.accepted": 5,
        "seeds.accepted": 1,
        "eval.accepted": 10,
    }
    ev = list(iter_samples(list_shards(tmp_path / "out" / "wafers" / "ingest" / "eval")))
    assert all(s["meta"]["labels"]["label"] == s["meta"]["source"].split("/")[0] for s in ev)
    # A new image in the user's folder is picked up on the next run.
    _img(tmp_path / "raw" / "new.png", 55)
    _img(tmp_path / "labeled" / "clean" / "new.png", 56)
    counts = run_pipeline(cfg)["ingest"].counts
    assert (counts["pool.accepted"], counts["eval.accepted"]) == (6, 11)
    ev = list(iter_samples(list_shards(tmp_path / "out" / "wafers" / "ingest" / "eval")))
    assert all("labels" in s["meta"] for s in ev), "a new labeled image lost its label"


def _labels_csv(tmp_path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """A labeled folder with one image per row (named ``<n>.png``) and its CSV."""
    for r in rows:
        _img(tmp_path / "labeled" / r[0], 10 + int(r[0].split(".")[0]))
    with open(tmp_path / "l.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    _img(tmp_path / "pool" / "a.png", 1)
    return tmp_path / "l.csv"


def _prepare_csv(tmp_path: Path, csv_path: Path):
    return prepare(
        _cfg(pool=[str(tmp_path / "pool")], labeled=str(tmp_path / "labeled"), labels_csv=str(csv_path)),
        tmp_path / "r",
    )


def test_group_and_heldout_columns_travel_and_are_not_tasks(tmp_path: Path) -> None:
    rows = [[f"{i}.png", "ab"[i % 2], f"part{i // 3}", "true" if i < 6 else "False"] for i in range(12)]
    out = _prepare_csv(tmp_path, _labels_csv(tmp_path, ["key", "grade", "group", "heldout"], rows))
    assert list(out.tasks) == ["grade"]
    labels = read_labels(out.labels_csv)
    assert labels["0.png"]["group"] == "part0" and labels["0.png"]["heldout"] is True
    assert labels["11.png"]["heldout"] is False
    # No split column: the drawn split keeps every group on one side.
    sides: dict[str, set[str]] = {}
    for v in labels.values():
        sides.setdefault(v["group"], set()).add(v["split"])
    assert all(len(s) == 1 for s in sides.values()) and {"train", "test"} <= set().union(*sides.values())


@pytest.mark.parametrize(
    ("header", "rows", "match"),
    [
        (
            ["key", "grade", "group"],
            [["0.png", "a", "g"], ["1.png", "a", ""]],
            r"l.csv:3 \(key '1.png'\): group is empty",
        ),
        (
            ["key", "grade", "heldout"],
            [["0.png", "a", "true"], ["1.png", "a", "yes please"]],
            r"l.csv:3 \(key '1.png'\): heldout must be true or false",
        ),
        (["key", "group", "heldout"], [["0.png", "g", "true"]], "needs at least one task column"),
    ],
)
def test_bad_group_or_heldout_values_name_file_and_row(
    tmp_path: Path, header: list[str], rows: list[list[str]], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _prepare_csv(tmp_path, _labels_csv(tmp_path, header, rows))
