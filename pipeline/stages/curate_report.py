"""The curate report step: image grids, histograms and ``report/index.html``."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.manifest import Manifest, config_hash
from pipeline.curate import report as rp
from pipeline.curate.write import fetch_images
from pipeline.io.shards import list_shards


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.open()] if path.is_file() else []


def report_step(ctx: Any, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    from pipeline.stages.curate_steps import score

    rc = ctx.cfg.curate.report
    c = ctx.cfg.curate
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    pool_shards = list_shards(ctx.ingest / "pool")
    removals = _rows(ctx.root / "dedup" / "removals.jsonl")
    contaminated = _rows(ctx.root / "decontaminate" / "contaminated.jsonl")
    retrieved = _rows(ctx.root / "retrieve" / "retrieved.jsonl")
    seed_nn = _rows(ctx.root / "retrieve" / "seed_neighbours.jsonl")[: rc.seeds_shown]

    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in removals:
        groups[r["kept"]].append(r)
    shown_groups = sorted(groups.items(), key=lambda kv: (-len(kv[1]), min(r["similarity"] for r in kv[1])))[: rc.groups_shown]
    shown_cont = sorted(contaminated, key=lambda r: r["similarity"])[: rc.contaminated_shown]
    want_pool = {k for k, _ in shown_groups} | {r["id"] for _, g in shown_groups for r in g} | {r["id"] for r in shown_cont}
    want_pool |= {n for s in seed_nn for n, _ in s["neighbours"]}
    # Candidate pairs the verification rejected, the most similar by descriptor first (the ones it overrode).
    cand_d = _rows(ctx.root / "dedup" / "candidates.jsonl")
    cand_c = _rows(ctx.root / "decontaminate" / "candidates.jsonl")
    rej_d = sorted((r for r in cand_d if not r["copy"]), key=lambda r: -r["similarity"])[: rc.contaminated_shown]
    rej_c = sorted((r for r in cand_c if not r["copy"]), key=lambda r: -r["similarity"])[: rc.contaminated_shown]
    want_pool |= {x for r in rej_d for x in (r["a"], r["b"])} | {r["id"] for r in rej_c}
    imgs = fetch_images(pool_shards, want_pool)
    seed_imgs = fetch_images(list_shards(ctx.ingest / "seeds"), [s["seed"] for s in seed_nn])
    eval_imgs = fetch_images(list_shards(ctx.ingest / "eval"), [r["eval_id"] for r in shown_cont + rej_c])
    chosen = {r["id"] for r in retrieved}

    sections: list[tuple[str, str, list[str]]] = []
    if seed_nn:
        rows = [[(seed_imgs.get(s["seed"]), "SEED " + s["seed"][:8])]
                + [(imgs.get(n), f"{'+' if n in chosen else '-'} {sim:.3f}") for n, sim in s["neighbours"]] for s in seed_nn]
        rp.image_grid(rows, folder / "seeds_neighbours.png", rc.thumb)
        sections.append(("Seeds and their nearest candidates",
                         "First column: a seed. Then its nearest pool candidates (backbone cosine); + = in the curated set.",
                         ["seeds_neighbours.png"]))
    if shown_groups:
        rows = [[(imgs.get(k), "KEPT " + k[:8])] + [(imgs.get(r["id"]), f"x {r['similarity']:.4f}") for r in g] for k, g in shown_groups]
        rp.image_grid(rows, folder / "duplicate_groups.png", rc.thumb)
        sections.append(("Near-duplicate groups", "The kept image, then the removed ones with their similarity "
                         "(largest groups first, then the least similar).", ["duplicate_groups.png"]))
    if shown_cont:
        rows = [[(imgs.get(r["id"]), "POOL " + r["id"][:8]), (eval_imgs.get(r["eval_id"]), f"EVAL {r['similarity']:.4f}")] for r in shown_cont]
        rp.image_grid(rows, folder / "decontaminated.png", rc.thumb)
        sections.append(("Decontaminated", "Removed pool image beside the evaluation image it copies (least similar first).",
                         ["decontaminated.png"]))
    if rej_d or rej_c:
        rows = [[(imgs.get(r["a"]), "POOL " + r["a"][:8]), (imgs.get(r["b"]), f"{r['similarity']:.3f} {r['verify']:.2f} {r['outlier']:.0f}")] for r in rej_d]
        rows += [[(imgs.get(r["id"]), "POOL " + r["id"][:8]), (eval_imgs.get(r["eval_id"]), f"E {r['similarity']:.3f} {r['verify']:.2f} {r['outlier']:.0f}")]
                 for r in rej_c]
        rp.image_grid(rows, folder / "verification_rejected.png", rc.thumb)
        sections.append(("Rejected by verification", "Candidate pairs kept apart by the aligned local comparison, highest "
                         "descriptor similarity first; captions: descriptor cosine, structure score, outlier score (E: the "
                         "evaluation image). Pool pairs first, then pool/eval pairs.",
                         ["verification_rejected.png"]))

    hists: list[str] = []
    nn1 = ctx.root / "dedup" / "nn1_similarity.npy"
    if nn1.is_file():
        rp.histogram({"pool 1-NN": np.load(nn1)}, folder / "hist_dedup.png",
                     f"Nearest-neighbour similarity in the pool ({c.dedup.features})", {"threshold": c.dedup.threshold})
        rp.histogram({"pool 1-NN": np.load(nn1)}, folder / "hist_dedup_zoom.png", "Zoom: the copy mode near 1",
                     {"threshold": c.dedup.threshold}, bins=50, lo=0.95)
        hists += ["hist_dedup.png", "hist_dedup_zoom.png"]
    best = ctx.root / "decontaminate" / "best_similarity.npy"
    if best.is_file():
        rp.histogram({"pool -> nearest eval": np.load(best)}, folder / "hist_decontam.png",
                     f"Similarity of pool images to their nearest evaluation image ({c.decontam.features})",
                     {"threshold": c.decontam.threshold})
        rp.histogram({"pool -> nearest eval": np.load(best)}, folder / "hist_decontam_zoom.png", "Zoom: the copy mode near 1",
                     {"threshold": c.decontam.threshold}, bins=50, lo=0.95)
        hists += ["hist_decontam.png", "hist_decontam_zoom.png"]
    if cand_d or cand_c:
        data = {k: np.array([r["verify"] for r in v]) for k, v in (("dedup", cand_d), ("decontam", cand_c)) if v}
        thr = {f"{k} threshold": float(json.loads((ctx.root / d / "calibration.json").read_text())["structure_threshold"])
               for k, d in (("dedup", "dedup"), ("decontam", "decontaminate")) if k in data}
        rp.histogram(data, folder / "hist_verify.png", "Verification structure scores of candidate pairs", thr)
        hists.append("hist_verify.png")
    if retrieved:
        rp.histogram({"retrieved": np.array([r["similarity"] for r in retrieved])}, folder / "hist_retrieved.png",
                     f"Similarity of retrieved images to their seed or centroid ({c.retrieval.strategy})")
        hists.append("hist_retrieved.png")
    sections.append(("Similarity histograms", "Dashed lines: the thresholds in use.", hists))

    counts: dict[str, Any] = {}
    for name, m in results.items():
        counts.update({f"{name}.{k}": v for k, v in m.counts.items()})
    if ctx.cfg.curate.score:
        counts.update({f"score.{k}": float(v) for k, v in score(ctx, results).items()})
    rp.write_index(folder / "index.html", f"Curation report: {ctx.cfg.data_recipe.name}", counts, sections)
    images = sorted(p.name for p in folder.glob("*.png"))
    return Manifest("curate/report", h, artifacts={"index": "index.html", **{p: p for p in images}}, counts={"figures": len(images)})


def _report_hash(ctx: Any, results: dict[str, Manifest]) -> str:
    return config_hash(dict(ctx.cfg.curate.report), ctx.cfg.curate.score, {n: m.config_hash for n, m in results.items()})


report_step.hash = _report_hash  # type: ignore[attr-defined]
