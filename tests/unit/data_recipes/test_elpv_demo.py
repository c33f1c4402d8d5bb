"""The ELPV demo recipe, tiny: ground truth consistent with the files it wrote."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from data_recipes.contract import read_labels
from data_recipes.elpv_demo.prepare import TRANSFORMS, prepare
from data_recipes.elpv_demo.schema import ElpvDemoRecipe

TINY = dict(
    elpv_limit=60,
    n_seeds=5,
    n_faces=4,
    n_digits=4,
    n_photo_tiles=4,
    n_pool_copies=4,
    n_byte_copies=2,
    n_eval_copies=3,
    n_corrupt=3,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("elpv")
    return out, prepare(OmegaConf.structured(ElpvDemoRecipe(**TINY)), out)


def test_counts_and_sources(demo: tuple[Path, object]) -> None:
    out, rec = demo
    n_heldout, n_seeds = round(60 * 0.3), 5
    n_pool_elpv = 60 - n_heldout - n_seeds
    n_pool = n_pool_elpv + 4 + 4 + 4 + 4 + 2 + 3 + 3
    counts = dict(rec.info["counts"])
    modules, groups = counts.pop("modules"), counts.pop("groups")
    assert 20 <= groups <= modules <= 44 and modules - groups <= 1  # 60 random cells of 44 modules, one twin
    assert counts == {
        "pool": n_pool,
        "pool_elpv": n_pool_elpv,
        "seeds": n_seeds,
        "eval": 60,
        "eval_heldout": n_heldout,
    }
    assert len(list((out / "pool").iterdir())) == n_pool
    assert len(list((out / "seeds").iterdir())) == n_seeds and len(list((out / "eval").iterdir())) == 60
    assert rec.sources == {s: [str(out / s)] for s in ("pool", "seeds", "eval")}
    assert set(rec.tasks) == {"defect", "type"} and rec.tasks["defect"].primary
    assert rec.tasks["defect"].normal == "functional" and rec.tasks["type"].normal is None
    assert rec.info["elpv"].endswith("CC BY-NC-SA 4.0")


def test_ground_truth_matches_the_files(demo: tuple[Path, object]) -> None:
    out, rec = demo
    truth = json.loads(Path(rec.ground_truth).read_text())
    assert set(truth) == {p.name for p in (out / "pool").iterdir()}
    kinds = Counter(t.get("transform", "original") for t in truth.values() if t["origin"] != "corrupt")
    assert kinds["byte_copy"] == 2 and sum(kinds[t] for t in TRANSFORMS) == 4 + 3
    assert Counter(t["in_domain"] for t in truth.values() if "copy_of" not in t and t["origin"] != "corrupt") == {
        True: 37,
        False: 12,
    }
    for key, t in truth.items():
        data = (out / "pool" / key).read_bytes()
        if t["origin"] == "corrupt":
            assert t["expected_rejection"] in ("empty_file", "truncated", "not_an_image") and not t["in_domain"]
            continue
        Image.open(out / "pool" / key).load()  # everything that is not planted as corrupt decodes
        if "copy_of" in t:
            src = t["copy_of"]
            folder = out / src["source"]
            assert (folder / src["key"]).is_file()
            if src["source"] == "pool":
                assert truth[src["key"]]["origin"] == t["origin"] and "copy_of" not in truth[src["key"]]
            if t["transform"] == "byte_copy":
                assert data == (folder / src["key"]).read_bytes()
            else:
                assert data != (folder / src["key"]).read_bytes()
        assert key.endswith(".jpg") == (t.get("transform") == "jpeg_q70")
        # Every ELPV image carries its cell number (neighbouring cells are their own scoring category).
        assert ("elpv_cell" in t) == t["origin"].startswith("elpv/cell")
        if "elpv_cell" in t:
            assert t["origin"] == f"elpv/cell{t['elpv_cell']:04d}.png"


def test_eval_is_every_cell_and_heldout_marks_the_cells_pretraining_never_sees(demo: tuple[Path, object]) -> None:
    out, rec = demo
    labels = read_labels(rec.labels_csv)
    assert set(labels) == {p.name for p in (out / "eval").iterdir()}
    assert all(
        v["defect"] == ("defective" if float(v["defect_probability"]) >= 0.5 else "functional") for v in labels.values()
    )
    truth = json.loads(Path(rec.ground_truth).read_text())
    pool_cells = {
        t["origin"].split("/")[1]
        for t in truth.values()
        if t["origin"].startswith("elpv/") and t.get("copy_of", {}).get("source") != "eval"
    }
    seeds = {p.name for p in (out / "seeds").iterdir()}
    heldout = {k for k, v in labels.items() if v["heldout"] is True}
    assert len(heldout) == round(60 * 0.3) and all(v["heldout"] in (True, False) for v in labels.values())
    assert not (pool_cells & seeds) and not (pool_cells & heldout) and not (seeds & heldout)
    assert pool_cells | seeds | heldout == set(labels)
    # Seeds are byte copies of the package files, like the evaluation files.
    assert all((out / "seeds" / k).read_bytes() == (out / "eval" / k).read_bytes() for k in seeds)
    eval_copies = [t for t in truth.values() if t.get("copy_of", {}).get("source") == "eval"]
    assert len(eval_copies) == 3 and all(t["origin"] == "elpv/" + t["copy_of"]["key"] for t in eval_copies)
    assert {t["copy_of"]["key"] for t in eval_copies} <= heldout


def test_groups_are_modules_and_the_split_never_cuts_one(demo: tuple[Path, object]) -> None:
    from data_recipes.elpv_demo.prepare import elpv_records

    _, rec = demo
    labels = read_labels(rec.labels_csv)
    module = {r["path"].name: r["module"] for r in elpv_records()}
    assert all(v["group"] == str(module[k]) for k, v in labels.items())
    sides: dict[str, set[str]] = {}
    for v in labels.values():
        sides.setdefault(v["group"], set()).add(v["split"])
    assert all(len(s) == 1 for s in sides.values())
    n_test = sum(v["split"] == "test" for v in labels.values())
    assert 0.15 <= n_test / len(labels) <= 0.45
    # Module ids in package order: cell0001-0060 are module 0, the last cell is module 43.
    assert module["cell0001.png"] == module["cell0060.png"] == 0 != module["cell0061.png"]
    assert module["cell2624.png"] == 43


def test_same_config_same_bytes(demo: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = demo
    prepare(OmegaConf.structured(ElpvDemoRecipe(**TINY)), tmp_path)

    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(tmp_path) == digest(out)
