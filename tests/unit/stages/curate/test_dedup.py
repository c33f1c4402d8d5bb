"""The dedup step on a tiny pool with one planted copy."""

from __future__ import annotations

import json

import numpy as np

from pipeline.core.manifest import Manifest
from pipeline.stages.curate import dedup
from tests.unit.stages.curate.conftest import N_POOL, World


def _run(world: World, **changes: object) -> tuple[Manifest, list[dict]]:
    ctx = world.make_ctx()
    for k, v in changes.items():
        setattr(ctx.opts.dedup, k, v)
    folder = world.curate / "dedup"
    m = dedup.run(ctx, {}, folder, dedup.STEP.hash(ctx, {}))
    return m, [json.loads(x) for x in (folder / "removals.jsonl").open()]


def test_the_planted_copy_and_only_it_is_removed(world: World) -> None:
    m, removals = _run(world)
    ids = world.ids("pool")
    copy, original = (ids[k] for k in world.pool_copy)
    assert len(removals) == 1 and {removals[0]["id"], removals[0]["kept"]} == {copy, original}
    assert removals[0]["similarity"] > 0.99
    assert m.counts["pool"] == N_POOL + 2 and m.counts["near_duplicates_removed"] == 1
    assert m.counts["duplicate_groups"] == 1 and m.counts["byte_duplicates_at_ingest"] == 0
    labels = np.load(world.curate / "dedup" / "labels.npy")
    order = json.loads((world.curate / "embed" / "pool" / "ids.json").read_text())
    lab = dict(zip(order, labels.tolist()))
    assert lab[copy] == lab[original] and len(set(labels.tolist())) == N_POOL + 1
    assert np.load(world.curate / "dedup" / "nn1_similarity.npy").shape == (N_POOL + 2,)
    assert not list((world.curate / "dedup").glob(".*.npy"))  # the centred descriptors are temporary


def test_the_configured_threshold_is_the_one_used_without_calibration(world: World) -> None:
    ctx = world.make_ctx()
    ctx.opts.calibration.enabled = False
    ctx.opts.dedup.threshold = 1.01
    m = dedup.run(ctx, {}, world.curate / "dedup", "h")
    removals = [json.loads(x) for x in (world.curate / "dedup" / "removals.jsonl").open()]
    assert removals == [] and m.counts["edges"] == 0 and m.extra["threshold"] == 1.01


def test_the_hash_follows_dedup_and_index_settings_not_the_report(world: World) -> None:
    ctx = world.make_ctx()
    h = dedup.STEP.hash(ctx, {})
    ctx.opts.report.thumb = 10
    assert dedup.STEP.hash(ctx, {}) == h
    ctx.opts.index.nprobe = 3
    assert dedup.STEP.hash(ctx, {}) != h
    h = dedup.STEP.hash(ctx, {})
    ctx.opts.calibration.dedup_recall = 0.9
    assert dedup.STEP.hash(ctx, {}) != h


def test_calibration_sets_the_threshold_and_the_synthetic_scores_are_shared(world: World) -> None:
    m, _ = _run(world)
    cal = json.loads((world.curate / "dedup" / "copy_calibration.json").read_text())
    assert (
        abs(m.extra["threshold"] - cal["threshold"]) < 1e-4
        and m.metrics["dedup.copy_threshold"] == m.extra["threshold"]
    )
    assert all(cal[f"synthetic_recall.{k}"] >= 0.97 - 1e-9 for k in cal["kinds"])
    assert len(list((world.curate / "calibration").glob("*.npz"))) == 1  # decontamination reuses it


def test_verification_writes_candidates_and_a_later_run_without_it_removes_them(world: World) -> None:
    ctx = world.make_ctx()
    v = ctx.opts.dedup.verify
    v.enabled, v.threshold, v.outlier_threshold = True, 0.5, 50.0  # fixed thresholds: no calibration
    folder = world.curate / "dedup"
    m = dedup.run(ctx, {}, folder, "h")
    rows = [json.loads(x) for x in (folder / "candidates.jsonl").open()]
    assert len(rows) == 1 and rows[0]["copy"] is True and m.counts["verify_verified"] == 1
    assert json.loads((folder / "calibration.json").read_text())["rule"] == "fixed"
    v.enabled = False
    dedup.run(ctx, {}, folder, "h")
    assert not (folder / "candidates.jsonl").exists() and not (folder / "calibration.json").exists()
