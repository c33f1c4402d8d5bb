"""Animal-MNIST writer: a tiny synthetic pickle in the package's format, no package needed."""

from __future__ import annotations

import csv
import gzip
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from data_recipes.animal_mnist.prepare import (
    CLASSES,
    DATA_FILE,
    LABEL_FILE,
    first_of_near_duplicates,
    load_arrays,
    main,
    split_indices,
)
from data_recipes.folder.prepare import prepare as folder_prepare
from data_recipes.folder.schema import FolderRecipe


def _synthetic(folder: Path, per_class: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` distinct 28x28 images per class for 3 classes, plus a byte copy and a near copy."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), per_class)
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    near = images[4].copy()
    near[0, 0] ^= 1  # one grey level off: a re-encoded copy
    images = np.concatenate([images, images[2:3], near[None]])
    labels = np.concatenate([labels, labels[[2, 4]]])
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / DATA_FILE, "wb") as fh:
        pickle.dump(images, fh)
    with gzip.open(folder / LABEL_FILE, "wb") as fh:
        pickle.dump(labels, fh)
    return images, labels


def test_load_arrays_reads_the_gzipped_pickles(tmp_path: Path) -> None:
    images, labels = _synthetic(tmp_path / "data")
    got_x, got_y = load_arrays(tmp_path / "data")
    assert got_x.dtype == np.uint8 and got_x.shape == (20, 28, 28)
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)


def test_copies_keep_only_their_first_image(tmp_path: Path) -> None:
    images, _ = _synthetic(tmp_path / "data")
    keep = first_of_near_duplicates(images)
    assert keep.tolist() == list(range(18)), "the byte copy (18) and the near copy (19) go; the rest stay"


def test_split_is_disjoint_stratified_and_seeded() -> None:
    labels = np.repeat(np.arange(4), 10)
    keep = np.setdiff1d(np.arange(40), [0, 11])
    parts = split_indices(labels, keep, eval_per_class=3, n_seeds=5, n_pool=20, seed=7)
    assert {k: len(v) for k, v in parts.items()} == {"eval": 12, "seeds": 5, "pool": 20}
    assert np.bincount(labels[parts["eval"]]).tolist() == [3, 3, 3, 3]
    together = np.concatenate(list(parts.values()))
    assert len(set(together.tolist())) == 37 and not {0, 11} & set(together.tolist())
    again = split_indices(labels, keep, eval_per_class=3, n_seeds=5, n_pool=20, seed=7)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)
    other = split_indices(labels, keep, eval_per_class=3, n_seeds=5, n_pool=20, seed=8)
    assert not np.array_equal(parts["eval"], other["eval"])
    with pytest.raises(ValueError, match="only 26 images are left"):
        split_indices(labels, keep, eval_per_class=3, n_seeds=5, n_pool=30, seed=7)


def test_cli_writes_what_the_folder_recipe_reads(tmp_path: Path) -> None:
    images, labels = _synthetic(tmp_path / "data")
    out = tmp_path / "am"
    main(["--out", str(out), "--data", str(tmp_path / "data"), "--eval-per-class", "2", "--seeds", "2", "--pool", "5"])
    assert json.loads((out / "split.json").read_text())["near_duplicates_dropped"] == 2
    pngs = {p: sorted(q.name for q in (out / p).glob("*.png")) for p in ("pool", "seeds", "labeled")}
    assert [len(v) for v in pngs.values()] == [5, 2, 6]
    assert not set(pngs["pool"]) & set(pngs["labeled"]) and not set(pngs["seeds"]) & set(pngs["labeled"])
    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["key"] for r in rows) == pngs["labeled"]
    for r in rows:  # the file is the package's image, and its row names the package's class
        n = int(r["key"][4:9])
        png = np.asarray(Image.open(out / "labeled" / r["key"]))
        assert png.dtype == np.uint8 and png.shape == (28, 28)
        np.testing.assert_array_equal(png, images[n])
        assert r["animal"] == CLASSES[int(labels[n])]
    # The folder recipe takes the files as they are: one task, three classes, a stratified split.
    cfg = OmegaConf.structured(
        FolderRecipe(
            pool=[str(out / "pool")],
            seeds=[str(out / "seeds")],
            labeled=str(out / "labeled"),
            labels_csv=str(out / "labels.csv"),
        )
    )
    rec = folder_prepare(cfg, tmp_path / "recipe")
    assert list(rec.tasks) == ["animal"] and rec.tasks["animal"].classes == ["bear", "bird", "cat"]
    assert rec.tasks["animal"].normal is None
    before = {p: (out / p).read_bytes() for p in ["labels.csv", *(f"labeled/{k}" for k in pngs["labeled"])]}
    main(["--out", str(out), "--data", str(tmp_path / "data"), "--eval-per-class", "2", "--seeds", "2", "--pool", "5"])
    assert all((out / p).read_bytes() == b for p, b in before.items()), "the same arguments give the same bytes"
