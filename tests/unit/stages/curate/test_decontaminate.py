"""The decontaminate step: the pool copy of an evaluation image is found, nothing else."""

from __future__ import annotations

import json

import numpy as np

from pipeline.stages.curate import decontaminate
from tests.unit.stages.curate.conftest import N_EVAL, N_POOL, World


def test_the_pool_copy_of_an_eval_image_is_contaminated(world: World) -> None:
    ctx = world.make_ctx()
    folder = world.curate / "decontaminate"
    m = decontaminate.run(ctx, {}, folder, decontaminate.STEP.hash(ctx, {}))
    rows = [json.loads(x) for x in (folder / "contaminated.jsonl").open()]
    pool_id, eval_id = world.ids("pool")[world.eval_copy[0]], world.ids("eval")[world.eval_copy[1]]
    assert [(r["id"], r["eval_id"]) for r in rows] == [(pool_id, eval_id)] and rows[0]["similarity"] > 0.99
    assert m.counts == {"contaminated": 1, "eval": N_EVAL}
    best = np.load(folder / "best_similarity.npy")
    assert best.shape == (N_POOL + 2,) and (best > 0.99).sum() == 1
    assert not list(folder.glob(".*.npy"))


def test_a_threshold_above_one_finds_nothing(world: World) -> None:
    ctx = world.make_ctx()
    ctx.opts.decontam.threshold = 1.01
    ctx.opts.calibration.enabled = False  # the fixed threshold is used only without calibration
    m = decontaminate.run(ctx, {}, world.curate / "decontaminate", "h")
    assert m.counts["contaminated"] == 0 and m.extra["threshold"] == 1.01


def test_without_an_eval_source_nothing_is_contaminated(world: World) -> None:
    ctx = world.make_ctx(sources=("pool", "seeds"))
    folder = world.curate / "decontaminate"
    m = decontaminate.run(ctx, {}, folder, "h")
    assert m.counts == {"contaminated": 0} and m.extra["note"] == "no eval source"
    assert (folder / "contaminated.jsonl").read_text() == ""


def test_calibrated_thresholds_are_written_and_used(world: World) -> None:
    ctx = world.make_ctx()
    folder = world.curate / "decontaminate"
    m = decontaminate.run(ctx, {}, folder, "h")
    cal = json.loads((folder / "copy_calibration.json").read_text())
    assert abs(m.extra["threshold"] - cal["threshold"]) < 1e-4 and cal["candidate_threshold"] <= cal["threshold"]
    assert cal["target_recall"] == ctx.opts.calibration.decontam_recall and cal["images"] == 8
    refined = [json.loads(x) for x in (folder / "refined.jsonl").open()]
    # Every candidate at or above the threshold is a removal, and the planted copy is one of them.
    pool_id = world.ids("pool")[world.eval_copy[0]]
    assert {r["a"] for r in refined if r["copy"]} == {pool_id}
