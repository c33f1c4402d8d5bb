"""The decontaminate step: pool images that copy a held-out evaluation image.

Writes ``contaminated.jsonl`` (pool id, the evaluation id it copies, similarity)
and ``best_similarity.npy`` (each pool image's best match among the held-out
evaluation images, for the report's histogram).

Only held-out evaluation images (``labels.heldout`` not false) are references:
a labelled image that the recipe also put in the pool on purpose is meant to
be pretrained on, and its pool copy must stay.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.manifest import Manifest
from pipeline.curate import calibrate as cb
from pipeline.curate.decontam import Contamination, best_match, best_per_pool, candidate_pairs, find_contaminated
from pipeline.curate.knn_index import build_index
from pipeline.io.shards import read_metadata
from pipeline.stages.curate.context import Context, Step, copy_mean, features, save_npy, write_jsonl
from pipeline.stages.curate.copy_thresholds import calibrate_step, refine
from pipeline.stages.curate.verify import verify_pairs


def _hash(ctx: Context, results: dict[str, Manifest]) -> str:
    c = ctx.opts
    return ctx.upstream_hash(results, c.decontam, c.index, c.embed, c.calibration)


def heldout_ids(ingest_eval: Path) -> set[str]:
    """Ids of the held-out evaluation images; a missing or unparsable flag counts as held out (protect more)."""
    out = set()
    for r in read_metadata(ingest_eval):
        flag = (r.get("labels") or {}).get("heldout", True)
        if not (flag is False or str(flag).strip().lower() in ("false", "0", "no")):
            out.add(r["id"])
    return out


def run(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    d = ctx.opts.decontam
    folder.mkdir(parents=True, exist_ok=True)
    if "eval" not in ctx.emb:
        write_jsonl(folder / "contaminated.jsonl", [])
        return Manifest("curate/decontaminate", h, counts={"contaminated": 0}, extra={"note": "no eval source"})
    pool_rows, per, pool_ids = features(ctx, "pool", d.features, folder)
    eval_rows, _, all_eval_ids = features(ctx, "eval", d.features, folder)
    held = heldout_ids(ctx.ingest / "eval")
    keep = np.array([i in held for i in all_eval_ids], dtype=bool)
    eval_rows, eval_ids = eval_rows[np.repeat(keep, per)], [i for i, k in zip(all_eval_ids, keep) if k]
    if not eval_ids:
        write_jsonl(folder / "contaminated.jsonl", [])
        (folder / "best_similarity.npy").unlink(missing_ok=True)
        for p in folder.glob(".*_copy_centered.npy"):
            p.unlink()
        return Manifest(
            "curate/decontaminate",
            h,
            counts={"contaminated": 0, "eval": len(all_eval_ids), "eval_heldout": 0},
            extra={"note": "no held-out eval images"},
        )
    opts = ctx.opts.index
    index = build_index(eval_rows, opts, seed=ctx.seed)
    v = d.verify
    for stale in ("calibration.npz", "refined.jsonl", "copy_calibration.json"):
        (folder / stale).unlink(missing_ok=True)
    calibrated = ctx.opts.calibration.enabled and d.features == "copy"
    thr = v.candidate_threshold if v.enabled else d.threshold
    cal_info: dict[str, float] = {}
    if calibrated:
        mean = copy_mean(ctx)
        cal = calibrate_step(
            ctx,
            folder,
            pool_rows,
            per,
            pool_ids,
            index.search,
            (ctx.ingest / "eval", eval_ids, per),
            ctx.opts.calibration.decontam_recall,
            True,
            mean,
        )
        thr, cal_info = cal.candidate, cal.summary()
    found: list[Contamination] = []
    best: list[np.ndarray] = []
    step = max(1, opts.batch_rows // per) * per  # whole items per batch
    for b in range(0, pool_rows.shape[0], step):
        q = np.ascontiguousarray(pool_rows[b : b + step], dtype=np.float32)
        sims, nn = index.search(q, min(d.k, index.ntotal))
        # Verification judges every candidate pair, not just each pool item's best match.
        pairs = candidate_pairs if v.enabled or calibrated else find_contaminated
        found += [Contamination(c.pool + b // per, c.eval, c.similarity) for c in pairs(sims, nn, thr, per, per)]
        best.append(best_match(sims, nn, per))
    pool = ctx.ingest / "pool"
    if calibrated:
        top = cb.best_per_item(
            np.array([c.pool for c in found], np.int64),
            np.array([c.eval for c in found], np.int64),
            np.array([c.similarity for c in found], np.float32),
            # verification judges the kNN candidates in place of alignment and refinement
            ctx.opts.calibration.refined if v.enabled else ctx.opts.calibration.candidates,
        )
        found = [c for c, t in zip(found, top) if t]
    if calibrated and not v.enabled:
        r = refine(
            ctx,
            folder,
            [(pool_ids[c.pool], eval_ids[c.eval]) for c in found],
            (pool, ctx.ingest / "eval"),
            [c.similarity for c in found],
            cal,
            mean,
        )
        found = best_per_pool([Contamination(c.pool, c.eval, float(x)) for c, x in zip(found, r) if x >= cal.threshold])
        thr = cal.threshold
    ok, extra, vcounts, vmetrics = verify_pairs(
        v,
        folder,
        "decontam",
        [(pool_ids[c.pool], eval_ids[c.eval]) for c in found],
        (pool, ctx.ingest / "eval"),
        [pool_ids[c.pool] for c in found],
        [{"id": pool_ids[c.pool], "eval_id": eval_ids[c.eval], "similarity": round(c.similarity, 5)} for c in found],
        ctx.seed,
        ctx.progress,
    )
    if ok is not None:
        found = best_per_pool([c for c, keep in zip(found, ok) if keep])
    save_npy(folder / "best_similarity.npy", (np.concatenate(best) if best else np.zeros(0)).astype(np.float32))
    write_jsonl(
        folder / "contaminated.jsonl",
        [{"id": pool_ids[c.pool], "eval_id": eval_ids[c.eval], "similarity": round(c.similarity, 5)} for c in found],
    )
    for p in folder.glob(".*_copy_centered.npy"):
        p.unlink()
    return Manifest(
        "curate/decontaminate",
        h,
        artifacts={"contaminated": "contaminated.jsonl", "best": "best_similarity.npy"},
        counts={"contaminated": len(found), "eval": len(all_eval_ids), "eval_heldout": len(eval_ids), **vcounts},
        metrics=vmetrics,
        extra={"features": d.features, "threshold": thr, "calibration": cal_info, **extra},
    )


STEP = Step("decontaminate", "decontaminate", _hash, run)
