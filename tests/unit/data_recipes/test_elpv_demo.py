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
    n_eval, n_seeds = round(60 * 0.3), 5
    n_pool_elpv = 60 - n_eval - n_seeds
    n_pool = n_pool_elpv + 4 + 4 + 4 + 4 + 2 + 3 + 3
    assert rec.info["counts"] == {"pool": n_pool, "pool_elpv": n_pool_elpv, "seeds": n_seeds, "eval": n_eval}
    assert len(list((out / "pool").iterdir())) == n_pool
    assert len(list((out / "seeds").iterdir())) == n_seeds and len(list((out / "eval").iterdir())) == n_eval
    assert rec.sources == {s: [str(out / s)] for s in ("pool", "seeds", "eval")}
    assert set(rec.tasks) == {"defect", "type"} and rec.tasks["defect"].primary
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


def test_eval_labels_seeds_and_pool_are_disjoint(demo: tuple[Path, object]) -> None:
    out, rec = demo
    labels = read_labels(rec.labels_csv)
    assert set(labels) == {p.name for p in (out / "eval").iterdir()}
    # Stratified on defect x type: every stratum with two or more cells is in both splits.
    strata: dict[str, list[str]] = {}
    for v in labels.values():
        strata.setdefault(f"{v['defect']}/{v['type']}", []).append(v["split"])
    assert len(strata) >= 3
    assert all(set(splits) == {"train", "test"} for splits in strata.values() if len(splits) >= 2)
    n_test = sum(v["split"] == "test" for v in labels.values())
    assert 0.2 <= n_test / len(labels) <= 0.4
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
    assert not (pool_cells & seeds) and not (pool_cells & set(labels)) and not (seeds & set(labels))
    eval_copies = [t for t in truth.values() if t.get("copy_of", {}).get("source") == "eval"]
    assert len(eval_copies) == 3 and all(t["origin"] == "elpv/" + t["copy_of"]["key"] for t in eval_copies)


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
