"""The report step: image grids, similarity histograms and ``report/index.html``."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.curate import ReportConfig
from pipeline.core.manifest import Manifest, config_hash
from pipeline.curate import report as rp
from pipeline.curate.write import fetch_images
from pipeline.io.shards import list_shards
from pipeline.stages.curate.context import Context, Step, read_jsonl
from pipeline.stages.curate.score import score

Row = dict[str, Any]
Section = tuple[str, str, list[str]]


def _hash(ctx: Context, results: dict[str, Manifest]) -> str:
    return config_hash(asdict(ctx.opts.report), ctx.opts.score, {n: m.config_hash for n, m in results.items()})


def _grids(ctx: Context, rc: ReportConfig, folder: Path) -> list[Section]:
    """The image grids: seeds and neighbours, duplicate groups, decontaminated and rejected pairs."""
    root = ctx.root
    removals = read_jsonl(root / "dedup" / "removals.jsonl")
    contaminated = read_jsonl(root / "decontaminate" / "contaminated.jsonl")
    chosen = {r["id"] for r in read_jsonl(root / "retrieve" / "retrieved.jsonl")}
    seed_nn = read_jsonl(root / "retrieve" / "seed_neighbours.jsonl")[: rc.seeds_shown]

    groups: dict[str, list[Row]] = defaultdict(list)
    for r in removals:
        groups[r["kept"]].append(r)
    by_size = sorted(groups.items(), key=lambda kv: (-len(kv[1]), min(r["similarity"] for r in kv[1])))
    shown_groups = by_size[: rc.groups_shown]
    shown_cont = sorted(contaminated, key=lambda r: r["similarity"])[: rc.contaminated_shown]
    # Candidate pairs the verification rejected, the most similar by descriptor first (the ones it overrode).
    rej_d = _rejected(read_jsonl(root / "dedup" / "candidates.jsonl"), rc.contaminated_shown)
    rej_c = _rejected(read_jsonl(root / "decontaminate" / "candidates.jsonl"), rc.contaminated_shown)
    # Both sides of the line: the candidate pairs that scored highest without reaching the threshold.
    under_d = _under(read_jsonl(root / "dedup" / "refined.jsonl"), rc.contaminated_shown)
    under_c = _under(read_jsonl(root / "decontaminate" / "refined.jsonl"), rc.contaminated_shown)
    want = {k for k, _ in shown_groups} | {r["id"] for _, g in shown_groups for r in g} | {r["id"] for r in shown_cont}
    want |= {n for s in seed_nn for n, _ in s["neighbours"]}
    want |= {x for r in rej_d for x in (r["a"], r["b"])} | {r["id"] for r in rej_c}
    want |= {x for r in under_d for x in (r["a"], r["b"])} | {r["a"] for r in under_c}
    imgs = fetch_images(list_shards(ctx.ingest / "pool"), want)
    seed_imgs = fetch_images(list_shards(ctx.ingest / "seeds"), [s["seed"] for s in seed_nn])
    eval_ids = [r["eval_id"] for r in shown_cont + rej_c] + [r["b"] for r in under_c]
    eval_imgs = fetch_images(list_shards(ctx.ingest / "eval"), eval_ids) if (ctx.ingest / "eval").is_dir() else {}

    sections: list[Section] = []
    if seed_nn:
        rows = [
            [(seed_imgs.get(s["seed"]), "SEED " + s["seed"][:8])]
            + [(imgs.get(n), f"{'+' if n in chosen else '-'} {sim:.3f}") for n, sim in s["neighbours"]]
            for s in seed_nn
        ]
        rp.image_grid(rows, folder / "seeds_neighbours.png", rc.thumb)
        text = "First column: a seed. Then its nearest pool candidates (backbone cosine); + = in the curated set."
        sections.append(("Seeds and their nearest candidates", text, ["seeds_neighbours.png"]))
    if shown_groups:
        rows = [
            [(imgs.get(k), "KEPT " + k[:8])] + [(imgs.get(r["id"]), f"x {r['similarity']:.4f}") for r in g]
            for k, g in shown_groups
        ]
        rp.image_grid(rows, folder / "duplicate_groups.png", rc.thumb)
        text = (
            "The kept image, then the removed ones with their similarity "
            "(largest groups first, then the least similar)."
        )
        sections.append(("Near-duplicate groups", text, ["duplicate_groups.png"]))
    if shown_cont:
        rows = [
            [(imgs.get(r["id"]), "POOL " + r["id"][:8]), (eval_imgs.get(r["eval_id"]), f"EVAL {r['similarity']:.4f}")]
            for r in shown_cont
        ]
        rp.image_grid(rows, folder / "decontaminated.png", rc.thumb)
        text = "Removed pool image beside the evaluation image it copies (least similar first)."
        sections.append(("Decontaminated", text, ["decontaminated.png"]))
    if under_c:
        thr = _threshold(root / "decontaminate")
        rows = [
            [(imgs.get(r["a"]), "POOL " + r["a"][:8]), (eval_imgs.get(r["b"]), f"EVAL {r['refined']:.4f}")]
            for r in under_c
        ]
        rp.image_grid(rows, folder / "decontam_under_threshold.png", rc.thumb)
        text = (
            f"Pool images kept although close to an evaluation image: the highest refined scores under the "
            f"threshold {thr:.4f}, highest first. Removed pairs are in 'Decontaminated' above."
        )
        sections.append(("Kept, just under the decontamination threshold", text, ["decontam_under_threshold.png"]))
    if under_d:
        thr = _threshold(root / "dedup")
        rows = [[(imgs.get(r["a"]), "POOL " + r["a"][:8]), (imgs.get(r["b"]), f"{r['refined']:.4f}")] for r in under_d]
        rp.image_grid(rows, folder / "dedup_under_threshold.png", rc.thumb)
        text = f"Pool pairs kept apart: the highest refined scores under the dedup threshold {thr:.4f}, highest first."
        sections.append(("Kept, just under the dedup threshold", text, ["dedup_under_threshold.png"]))
    if rej_d or rej_c:
        rows = [[(imgs.get(r["a"]), "POOL " + r["a"][:8]), (imgs.get(r["b"]), _scores(r))] for r in rej_d]
        rows += [
            [(imgs.get(r["id"]), "POOL " + r["id"][:8]), (eval_imgs.get(r["eval_id"]), "E " + _scores(r))]
            for r in rej_c
        ]
        rp.image_grid(rows, folder / "verification_rejected.png", rc.thumb)
        text = (
            "Candidate pairs kept apart by the aligned local comparison, highest descriptor similarity first; "
            "captions: descriptor cosine, structure score, outlier score (E: the evaluation image). "
            "Pool pairs first, then pool/eval pairs."
        )
        sections.append(("Rejected by verification", text, ["verification_rejected.png"]))
    return sections


def _scores(r: Row) -> str:
    return f"{r['similarity']:.3f} {r['verify']:.2f} {r['outlier']:.0f}"


def _lines(step_folder: Path, fixed: float) -> dict[str, float]:
    """Threshold lines for a kNN-similarity histogram: the calibrated candidate threshold, else the fixed one."""
    p = step_folder / "copy_calibration.json"
    return (
        {"candidate": float(json.loads(p.read_text())["candidate_threshold"])} if p.is_file() else {"threshold": fixed}
    )


def _under(refined: list[Row], n: int) -> list[Row]:
    """The ``n`` refined pairs under the copy threshold, highest first (pairs under the aligned
    threshold were not refined: they are further from the line)."""
    kept = (r for r in refined if not r["copy"] and r["refined"] is not None)
    return sorted(kept, key=lambda r: -r["refined"])[:n]


def _threshold(step_folder: Path) -> float:
    p = step_folder / "copy_calibration.json"
    return float(json.loads(p.read_text())["threshold"]) if p.is_file() else float("nan")


def _calibration(ctx: Context, folder: Path) -> tuple[list[str], dict[str, float]]:
    """The calibration plots (synthetic copies vs nearest non-copies, thresholds) and their numbers."""
    figs: list[str] = []
    numbers: dict[str, float] = {}
    for name, sub in (("dedup", "dedup"), ("decontam", "decontaminate")):
        js, npz = ctx.root / sub / "copy_calibration.json", ctx.root / sub / "calibration.npz"
        if not (js.is_file() and npz.is_file()):
            continue
        info = json.loads(js.read_text())
        numbers.update({f"calibration.{name}.{k}": v for k, v in info.items() if isinstance(v, (int, float))})
        with np.load(npz) as z:
            copies = np.concatenate([z[k] for k in z.files if k.startswith("refined_")])
            knn = np.concatenate([z[k] for k in z.files if k.startswith("knn_")])
            series = {
                "synthetic copies, refined": copies,
                "synthetic copies, kNN": knn,
                "nearest non-copy, refined": z["noncopy"],
            }
            aligned = [z[k] for k in z.files if k.startswith("aligned_")]
            if aligned:
                series["synthetic copies, aligned"] = np.concatenate(aligned)
        thr = {"copy": info["threshold"], "candidate": info["candidate_threshold"]}
        if "aligned_threshold" in info:
            thr["aligned"] = info["aligned_threshold"]
        title = f"{name}: synthetic copies vs nearest non-copies (target recall {info['target_recall']:g})"
        rp.histogram(series, folder / f"calibration_{name}.png", title, thr, bins=60, lo=min(0.0, float(knn.min())))
        figs.append(f"calibration_{name}.png")
    return figs, numbers


def _rejected(candidates: list[Row], n: int) -> list[Row]:
    return sorted((r for r in candidates if not r["copy"]), key=lambda r: -r["similarity"])[:n]


def _histograms(ctx: Context, folder: Path) -> list[str]:
    """Similarity histograms with the thresholds in use; returns the figure names."""
    c, root = ctx.opts, ctx.root
    hists: list[str] = []
    nn1 = root / "dedup" / "nn1_similarity.npy"
    if nn1.is_file():
        data, thr = {"pool 1-NN": np.load(nn1)}, _lines(root / "dedup", c.dedup.threshold)
        rp.histogram(
            data, folder / "hist_dedup.png", f"Nearest-neighbour similarity in the pool ({c.dedup.features})", thr
        )
        rp.histogram(data, folder / "hist_dedup_zoom.png", "Zoom: the copy mode near 1", thr, bins=50, lo=0.95)
        hists += ["hist_dedup.png", "hist_dedup_zoom.png"]
    best = root / "decontaminate" / "best_similarity.npy"
    if best.is_file():
        data, thr = {"pool -> nearest eval": np.load(best)}, _lines(root / "decontaminate", c.decontam.threshold)
        title = f"Similarity of pool images to their nearest evaluation image ({c.decontam.features})"
        rp.histogram(data, folder / "hist_decontam.png", title, thr)
        rp.histogram(data, folder / "hist_decontam_zoom.png", "Zoom: the copy mode near 1", thr, bins=50, lo=0.95)
        hists += ["hist_decontam.png", "hist_decontam_zoom.png"]
    cands = {
        k: read_jsonl(root / d / "candidates.jsonl") for k, d in (("dedup", "dedup"), ("decontam", "decontaminate"))
    }
    if any(cands.values()):
        data = {k: np.array([r["verify"] for r in v]) for k, v in cands.items() if v}
        thr = {
            f"{k} threshold": float(json.loads((root / d / "calibration.json").read_text())["structure_threshold"])
            for k, d in (("dedup", "dedup"), ("decontam", "decontaminate"))
            if k in data
        }
        rp.histogram(data, folder / "hist_verify.png", "Verification structure scores of candidate pairs", thr)
        hists.append("hist_verify.png")
    retrieved = read_jsonl(root / "retrieve" / "retrieved.jsonl")
    if retrieved:
        data = {"retrieved": np.array([r["similarity"] for r in retrieved])}
        title = f"Similarity of retrieved images to their seed or centroid ({c.retrieval.strategy})"
        rp.histogram(data, folder / "hist_retrieved.png", title)
        hists.append("hist_retrieved.png")
    return hists


def run(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    sections = _grids(ctx, ctx.opts.report, folder)
    sections.append(("Similarity histograms", "Dashed lines: the thresholds in use.", _histograms(ctx, folder)))
    cal_figs, cal_numbers = _calibration(ctx, folder)
    if cal_figs:
        text = (
            "Label-free thresholds: a sample of pool images copied once per kind of the copy suite; the copy "
            "threshold keeps the target share of every kind (refined score), the candidate and aligned thresholds "
            "more of the kNN and aligned scores. Non-copies: each sampled image against its nearest other image "
            "in the searched index (a real duplicate in the pool counts as a false match: the estimated "
            "false-match rate is an upper bound)."
        )
        sections.append(("Threshold calibration", text, cal_figs))
    counts: dict[str, Any] = dict(cal_numbers)
    for name, m in results.items():
        counts.update({f"{name}.{k}": v for k, v in m.counts.items()})
    if ctx.opts.score:
        counts.update({f"score.{k}": float(v) for k, v in score(ctx, results).items()})
    rp.write_index(folder / "index.html", f"Curation report: {ctx.title}", counts, sections)
    images = sorted(p.name for p in folder.glob("*.png"))
    artifacts = {"index": "index.html", **{p: p for p in images}}
    return Manifest("curate/report", h, artifacts=artifacts, counts={"figures": len(images)})


STEP = Step("report", "report", _hash, run)
