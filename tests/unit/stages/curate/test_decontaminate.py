"""The decontaminate step: the pool copy of a held-out evaluation image is found, nothing else."""

from __future__ import annotations

import json
import shutil

import numpy as np

from pipeline.config.ingest import IngestConfig
from pipeline.io.ingest import ingest
from pipeline.stages.curate import decontaminate
from tests.unit.stages.curate.conftest import N_EVAL, N_POOL, World


def test_the_pool_copy_of_an_eval_image_is_contaminated(world: World) -> None:
    ctx = world.make_ctx()
    folder = world.curate / "decontaminate"
    m = decontaminate.run(ctx, {}, folder, decontaminate.STEP.hash(ctx, {}))
    rows = [json.loads(x) for x in (folder / "contaminated.jsonl").open()]
    pool_id, eval_id = world.ids("pool")[world.eval_copy[0]], world.ids("eval")[world.eval_copy[1]]
    assert [(r["id"], r["eval_id"]) for r in rows] == [(pool_id, eval_id)] and rows[0]["similarity"] > 0.99
    assert m.counts == {"contaminated": 1, "eval": N_EVAL, "eval_heldout": N_EVAL}
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


def _relabel_eval(world: World, heldout: dict[str, bool]) -> None:
    """Ingest the eval images again with ``heldout`` flags (same bytes, so the same ids and embeddings)."""
    out = world.ingest / "eval"
    shutil.rmtree(out)
    labels = {k: {"split": "test", "heldout": v} for k, v in heldout.items()}
    ingest([world.root.parent / "raw" / "eval"], out, IngestConfig(shard_size=10), labels=labels, progress=False)


def test_an_eval_image_that_is_also_in_the_pool_on_purpose_is_no_reference(world: World) -> None:
    # e00's pool copy is a labelled image pretraining may see: it stays; the other eval images stay protected.
    _relabel_eval(world, {f"e{k:02d}.png": k != 0 for k in range(N_EVAL)})
    ctx = world.make_ctx()
    folder = world.curate / "decontaminate"
    m = decontaminate.run(ctx, {}, folder, "h")
    assert (folder / "contaminated.jsonl").read_text() == ""
    assert m.counts == {"contaminated": 0, "eval": N_EVAL, "eval_heldout": N_EVAL - 1}
    assert (np.load(folder / "best_similarity.npy") < 0.99).all()
    assert decontaminate.heldout_ids(world.ingest / "eval") == {
        i for k, i in world.ids("eval").items() if k != "e00.png"
    }


def test_with_no_held_out_eval_image_nothing_is_compared(world: World) -> None:
    _relabel_eval(world, {f"e{k:02d}.png": False for k in range(N_EVAL)})
    folder = world.curate / "decontaminate"
    m = decontaminate.run(world.make_ctx(), {}, folder, "h")
    assert m.counts == {"contaminated": 0, "eval": N_EVAL, "eval_heldout": 0}
    assert (folder / "contaminated.jsonl").read_text() == "" and not (folder / "best_similarity.npy").exists()


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
