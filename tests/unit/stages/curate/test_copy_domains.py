"""Copy detection on both test domains through the real dedup and decontaminate steps, scored like ELPV.

The package-image domain (``benchmarks/copy_domain.py``: microscopy and retina
tiles from 32 px up, photo distractors, planted copies of every kind) runs small
and fast here; both full domains at default settings are the slow tests (their
figures: ``benchmarks/copy_detect.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.copy_detect import build_folder, run_domain
from benchmarks.copy_domain import DomainConfig, build
from pipeline.config.curate import CurateConfig


def test_no_copy_of_an_evaluation_image_is_left_in_the_small_package_domain(tmp_path: Path) -> None:
    build(tmp_path / "src", DomainConfig(scale=0.15, copies_per_kind=1, eval_copies_per_kind=2, faces=20, digits=10))
    opts = CurateConfig()
    opts.calibration.images = 40  # a smaller sample than the default, for speed
    r = run_domain(tmp_path / "src", tmp_path / "work", opts)
    s = r["scores"]
    assert r["eval_copies_left"] == [] and s["decontam.recall"] == 1.0 and s["decontam.planted"] == 22
    # Dedup's recall is not asserted here: with 40 calibration images the false-match ceiling is
    # set by the sample's two highest non-copy scores and can cost much of it (the slow test below
    # checks the full domain at default settings).
    assert s["dedup.planted_pairs"] >= 10 and s["dedup.precision"] >= 0.9
    assert r["calibration"]["decontam"]["threshold"] < r["calibration"]["dedup"]["threshold"]  # errs on removal


@pytest.mark.slow  # about 45 s: ELPV cells are 300 px and alike, so candidates are many
def test_no_copy_of_an_evaluation_image_is_left_in_a_small_elpv_demo(tmp_path: Path) -> None:
    from data_recipes.elpv_demo.prepare import prepare
    from data_recipes.elpv_demo.schema import ElpvDemoRecipe

    small = ElpvDemoRecipe(
        elpv_limit=160, n_seeds=10, n_faces=10, n_digits=10, n_photo_tiles=10, n_pool_copies=8, n_eval_copies=8
    )
    prepare(small, tmp_path / "src")
    opts = CurateConfig()
    opts.calibration.images = 40
    r = run_domain(tmp_path / "src", tmp_path / "work", opts)
    s = r["scores"]
    assert r["eval_copies_left"] == [] and s["decontam.recall"] == 1.0 and s["decontam.planted"] == 8
    assert s["dedup.recall"] >= 0.85


@pytest.mark.slow
@pytest.mark.parametrize("domain", ["package", "elpv"])
def test_both_domains_at_default_settings(tmp_path: Path, domain: str) -> None:
    r = run_domain(build_folder(domain, tmp_path / "src"), tmp_path / "work")
    s = r["scores"]
    assert r["eval_copies_left"] == [] and s["decontam.recall"] >= 0.98
    assert all(v["recall"] >= 0.95 for v in r["per_kind"]["eval"].values())
    assert all(v["recall"] >= 0.95 for v in r["per_kind"]["pool"].values())  # every kind of copy
    # precision on planted copies, pairs of distinct cells of one ELPV module counted apart
    assert s["dedup.precision_distinct"] >= 0.95
