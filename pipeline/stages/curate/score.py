"""Curate scores against the recipe's ground truth (planted copies, in-domain sources), when it has one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.manifest import Manifest, read_manifest
from pipeline.curate import scoring
from pipeline.curate.embed import load_embeddings
from pipeline.io.shards import read_metadata
from pipeline.stages.curate.context import Context, read_ids, read_jsonl


def ground_truth(ctx: Context) -> dict[str, Any] | None:
    """The recipe's ground truth, if it has one (the path recorded at ingest, else ``recipe/``)."""
    gt = read_manifest(ctx.ingest / "pool").extra.get("ground_truth")
    for p in ([Path(gt)] if gt else []) + [ctx.ingest.parent / "recipe" / "ground_truth.json"]:
        if p.is_file():
            return json.loads(p.read_text())
    return None


def score(ctx: Context, results: dict[str, Manifest]) -> dict[str, float]:
    """Scores of the steps in ``results`` against the ground truth; none without one."""
    gt = ground_truth(ctx)
    if gt is None:
        return {}
    src = {i: m["source"] for i, m in ctx.pool_meta().items()}
    out: dict[str, float] = {}
    if "dedup" in results:
        _, ids = load_embeddings(ctx.emb["pool"], "copy")
        labels = np.load(ctx.root / "dedup" / "labels.npy")
        rem = [(src[r["id"]], src[r["kept"]]) for r in read_jsonl(ctx.root / "dedup" / "removals.jsonl")]
        out.update(scoring.score_dedup(gt, src.values(), rem, {src[i]: int(lab) for i, lab in zip(ids, labels)}))
    if "decontaminate" in results:
        ev = ctx.ingest / "eval"
        esrc = {r["id"]: r["source"] for r in read_metadata(ev)} if ev.is_dir() else {}
        rows = read_jsonl(ctx.root / "decontaminate" / "contaminated.jsonl")
        out.update(scoring.score_decontam(gt, src.values(), [(src[r["id"]], esrc.get(r["eval_id"], "")) for r in rows]))
    if "retrieve" in results:
        chosen = [src[i] for i in read_ids(ctx.root / "retrieve" / "retrieved.jsonl")]
        out.update(scoring.score_retrieval(gt, src.values(), chosen))
    return out
