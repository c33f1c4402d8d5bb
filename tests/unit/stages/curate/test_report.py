"""The report step: figures for what the steps found, and an index naming the counts and scores."""

from __future__ import annotations

from pipeline.core.manifest import Manifest
from pipeline.stages.curate import decontaminate, dedup, report, retrieve
from pipeline.stages.curate.context import read_jsonl
from tests.unit.stages.curate.conftest import NEAR, World


def test_the_report_shows_every_step_and_the_scores(world: World) -> None:
    ctx = world.make_ctx()
    ctx.opts.retrieval.k = NEAR
    results: dict[str, Manifest] = {}
    for name, mod in (("dedup", dedup), ("decontaminate", decontaminate), ("retrieve", retrieve)):
        results[name] = mod.run(ctx, results, world.curate / name, "h")
    folder = world.curate / "report"
    folder.mkdir(parents=True)
    (folder / "stale.png").write_bytes(b"")  # from an earlier run: must go
    m = report.run(ctx, results, folder, report.STEP.hash(ctx, results))
    grids = {"seeds_neighbours.png", "duplicate_groups.png", "decontaminated.png"}
    hists = {f"hist_{k}.png" for k in ("dedup", "dedup_zoom", "decontam", "decontam_zoom", "retrieved")}
    calibration = {"calibration_dedup.png", "calibration_decontam.png"}
    # Both sides of the line: a grid of the candidates just under each threshold, when there are any.
    under = {
        f"{name}_under_threshold.png"
        for name, step in (("dedup", "dedup"), ("decontam", "decontaminate"))
        if any(not r["copy"] and r["refined"] is not None for r in read_jsonl(world.curate / step / "refined.jsonl"))
    }
    figures = grids | hists | calibration | under
    assert {p.name for p in folder.glob("*.png")} == figures and m.counts == {"figures": len(figures)}
    html = (folder / "index.html").read_text()
    assert "Curation report: tiny" in html and "score.dedup.recall" in html and "dedup.near_duplicates_removed" in html
    assert "calibration.decontam.threshold" in html and "Threshold calibration" in html


def test_the_hash_follows_the_report_settings_and_the_steps(world: World) -> None:
    ctx = world.make_ctx()
    h = report.STEP.hash(ctx, {})
    assert report.STEP.hash(ctx, {"dedup": Manifest("curate/dedup", "x")}) != h
    ctx.opts.report.thumb = 32
    assert report.STEP.hash(ctx, {}) != h
