"""Scores of the steps' outputs against the planted ground truth."""

from __future__ import annotations

from pipeline.core.manifest import Manifest
from pipeline.stages.curate import decontaminate, dedup, retrieve
from pipeline.stages.curate.score import ground_truth, score
from tests.unit.stages.curate.conftest import N_SEEDS, NEAR, World


def _run_all(world: World) -> dict[str, Manifest]:
    ctx = world.make_ctx()
    ctx.opts.retrieval.k = NEAR
    results: dict[str, Manifest] = {}
    for name, mod in (("dedup", dedup), ("decontaminate", decontaminate), ("retrieve", retrieve)):
        results[name] = mod.run(ctx, results, world.curate / name, "h")
    return results


def test_planted_copies_and_in_domain_retrieval_score_perfectly(world: World) -> None:
    results = _run_all(world)
    s = score(world.make_ctx(), results)
    assert s["dedup.planted_pairs"] == 1 and s["dedup.recall"] == 1.0 and s["dedup.precision"] == 1.0
    assert s["decontam.recall"] == 1.0
    assert s["retrieve.in_domain_precision"] == 1.0 and s["retrieve.size"] == N_SEEDS * NEAR


def test_only_the_steps_that_ran_are_scored(world: World) -> None:
    results = _run_all(world)
    s = score(world.make_ctx(), {"dedup": results["dedup"]})
    assert s and all(k.startswith("dedup.") for k in s)


def test_without_ground_truth_there_are_no_scores(world: World) -> None:
    (world.root / "recipe" / "ground_truth.json").unlink()
    ctx = world.make_ctx()
    assert ground_truth(ctx) is None and score(ctx, _run_all(world)) == {}
