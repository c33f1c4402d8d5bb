"""The verification helper of the dedup and decontaminate steps: thresholds, scores, files."""

from __future__ import annotations

import json

from pipeline.config.curate import VerifyConfig
from pipeline.stages.curate.verify import threshold, verify_pairs
from tests.unit.stages.curate.conftest import World


def test_fixed_thresholds_are_used_as_given(world: World, tmp_path) -> None:
    v = VerifyConfig(threshold=0.4, outlier_threshold=9.0)
    cal, info = threshold(v, world.ingest / "pool", list(world.ids("pool").values()), 0, tmp_path)
    assert (cal.structure, cal.outlier) == (0.4, 9.0) and info["rule"] == "fixed"
    assert json.loads((tmp_path / "calibration.json").read_text())["structure_threshold"] == 0.4


def test_calibrated_thresholds_accept_keep_of_the_synthetic_copies(world: World, tmp_path) -> None:
    v = VerifyConfig(size=48, keep=0.9, calibration_images=6, calibration_ops=["crop", "jpeg", "brightness"])
    ids = list(world.ids("pool").values())
    cal, info = threshold(v, world.ingest / "pool", ids, 0, tmp_path)
    assert info["images"] == 6 and cal.scores.shape == (6, 2) and info["synthetic_accepted"] >= 0.8
    again, _ = threshold(v, world.ingest / "pool", ids[::-1], 0, tmp_path)  # seeded: the same sample
    assert (again.structure, again.outlier) == (cal.structure, cal.outlier)


def test_verification_confirms_the_copy_and_rejects_a_stranger(world: World, tmp_path) -> None:
    v = VerifyConfig(enabled=True, size=48, threshold=0.5, outlier_threshold=50.0)
    pool = world.ids("pool")
    pairs = [(pool["p00_copy.png"], pool["p00.png"]), (pool["p03.png"], pool["p04.png"])]
    recs = [{"a": a, "b": b} for a, b in pairs]
    root = world.ingest / "pool"
    ok, extra, counts, metrics = verify_pairs(v, tmp_path, "dedup", pairs, (root, root), [pairs[0][0]], recs, 0)
    assert ok is not None and ok.tolist() == [True, False]
    assert counts == {"verify_candidates": 2, "verify_verified": 1, "verify_rejected": 1}
    assert metrics["dedup.verify_structure_threshold"] == 0.5 and extra["verification"]["rule"] == "fixed"
    rows = [json.loads(x) for x in (tmp_path / "candidates.jsonl").open()]
    assert [r["copy"] for r in rows] == [True, False] and rows[0]["a"] == pairs[0][0]


def test_off_it_returns_no_mask_and_removes_earlier_files(tmp_path) -> None:
    for f in ("candidates.jsonl", "calibration.json"):
        (tmp_path / f).write_text("old")
    ok, extra, counts, metrics = verify_pairs(VerifyConfig(), tmp_path, "dedup", [], (tmp_path, tmp_path), [], [], 0)
    assert ok is None and (extra, counts, metrics) == ({}, {}, {}) and not list(tmp_path.iterdir())
