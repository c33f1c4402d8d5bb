"""The retrieve step: the seeds' neighbours (knn), minus what dedup and decontaminate removed."""

from __future__ import annotations

import json

import pytest

from pipeline.stages.curate import retrieve
from pipeline.stages.curate.context import write_jsonl
from tests.unit.stages.curate.conftest import N_POOL, N_SEEDS, NEAR, World


def _rows(path) -> list[dict]:
    return [json.loads(x) for x in path.open()]


def test_knn_takes_each_seeds_neighbours_with_their_lineage(world: World) -> None:
    ctx = world.make_ctx()
    ctx.opts.retrieval.k = NEAR
    folder = world.curate / "retrieve"
    m = retrieve.run(ctx, {}, folder, retrieve.STEP.hash(ctx, {}))
    pool, seeds = world.ids("pool"), world.ids("seeds")
    want = {pool[p]: seeds[s] for s, ps in world.in_domain.items() for p in ps}
    got = {r["id"]: r["seed"] for r in _rows(folder / "retrieved.jsonl")}
    assert got == want and m.counts["candidates"] == N_POOL + 2 and m.counts["retrieved"] == len(want)
    shown = _rows(folder / "seed_neighbours.jsonl")
    assert len(shown) == N_SEEDS and all(len(s["neighbours"]) == ctx.opts.report.neighbours_shown for s in shown)


def test_removed_images_are_not_candidates(world: World) -> None:
    ctx = world.make_ctx()
    ctx.opts.retrieval.k = NEAR
    pool = world.ids("pool")
    gone = pool[world.in_domain["s0.png"][0]]
    (world.curate / "dedup").mkdir(parents=True)
    write_jsonl(world.curate / "dedup" / "removals.jsonl", [{"id": gone, "kept": "x", "similarity": 1.0}])
    m = retrieve.run(ctx, {}, world.curate / "retrieve", "h")
    got = {r["id"] for r in _rows(world.curate / "retrieve" / "retrieved.jsonl")}
    assert gone not in got and m.counts["candidates"] == N_POOL + 1


def test_hierarchical_needs_no_seeds_and_takes_half_the_candidates(world: World) -> None:
    ctx = world.make_ctx(sources=("pool", "eval"))
    r = ctx.opts.retrieval
    r.strategy, r.levels, r.niter = "hierarchical", [4, 2], 5
    folder = world.curate / "retrieve"
    m = retrieve.run(ctx, {}, folder, "h")
    rows = _rows(folder / "retrieved.jsonl")
    assert m.counts["retrieved"] == len(rows) == (N_POOL + 2) // 2
    assert {x["strategy"] for x in rows} == {"hierarchical"} and not (folder / "seed_neighbours.jsonl").exists()


def test_cluster_keeps_the_seeds_clusters(world: World) -> None:
    ctx = world.make_ctx()
    r = ctx.opts.retrieval
    r.strategy, r.n_clusters, r.niter = "cluster", 4, 10
    m = retrieve.run(ctx, {}, world.curate / "retrieve", "h")
    got = {x["id"] for x in _rows(world.curate / "retrieve" / "retrieved.jsonl")}
    pool = world.ids("pool")
    assert {pool[p] for ps in world.in_domain.values() for p in ps} <= got and m.extra["strategy"] == "cluster"


def test_seed_strategies_without_seeds_and_unknown_strategies_fail_naming_them(world: World) -> None:
    ctx = world.make_ctx(sources=("pool",))
    with pytest.raises(FileNotFoundError, match="retrieval=knn needs seeds"):
        retrieve.run(ctx, {}, world.curate / "retrieve", "h")
    ctx.opts.retrieval.strategy = "nearest"
    with pytest.raises(ValueError, match="'nearest'"):
        retrieve.run(ctx, {}, world.curate / "retrieve", "h")
