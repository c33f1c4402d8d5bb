"""The dedup step: near-duplicates in the pool, removed in favour of one keeper per group.

Writes ``removals.jsonl`` (removed id, kept id, the edge that linked it),
``labels.npy`` (duplicate-group label per pool row) and ``nn1_similarity.npy``
(each image's nearest-neighbour similarity, for the report's histogram).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.manifest import Manifest
from pipeline.curate import calibrate as cb
from pipeline.curate import dedup as dd
from pipeline.curate.knn_index import build_index, choose_factory
from pipeline.stages.curate.context import Context, Step, copy_mean, features, save_npy, write_jsonl
from pipeline.stages.curate.copy_thresholds import calibrate_step, refine
from pipeline.stages.curate.verify import verify_pairs


def _hash(ctx: Context, results: dict[str, Manifest]) -> str:
    c = ctx.opts
    return ctx.upstream_hash(results, c.dedup, c.index, c.embed, c.calibration)


def _byte_duplicates(pool: Path) -> int:
    """Byte-identical copies the ingest stage already dropped (its records say ``duplicate``)."""
    with (pool / "records.jsonl").open() as fh:
        return sum(1 for line in fh if '"duplicate"' in line)


def run(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    d = ctx.opts.dedup
    folder.mkdir(parents=True, exist_ok=True)
    rows, per, ids = features(ctx, "pool", d.features, folder)
    queries = rows[::per] if per > 1 else rows  # the full-image row queries every crop of the others
    opts = ctx.opts.index
    index = build_index(rows, opts, ctx.progress, ctx.seed)
    v = d.verify
    pool = ctx.ingest / "pool"
    for stale in ("calibration.npz", "refined.jsonl", "copy_calibration.json"):
        (folder / stale).unlink(missing_ok=True)
    calibrated = ctx.opts.calibration.enabled and d.features == "copy" and len(ids) > 1
    # Calibrated: kNN pairs at the candidate threshold, re-scored by refinement, or by verification when on.
    thr = v.candidate_threshold if v.enabled else d.threshold
    cal_info: dict[str, float] = {}
    if calibrated:
        mean = copy_mean(ctx)
        cal = calibrate_step(
            ctx, folder, rows, per, ids, index.search, (pool, ids, per), ctx.opts.calibration.dedup_recall, False, mean
        )
        thr, cal_info = cal.candidate, cal.summary()
    i, j, s, nn1 = dd.edges_batched(index.search, queries, d.k + per, thr, per, opts.batch_rows, ctx.progress)
    if calibrated:
        # Verification judges the kNN candidates in place of alignment and refinement: as many per image
        # as would be refined.
        c = ctx.opts.calibration
        top = cb.best_per_item(i, j, s, c.refined if v.enabled else c.candidates)
        i, j, s = i[top], j[top], s[top]
    if calibrated and not v.enabled:
        r = refine(
            ctx,
            folder,
            [(ids[a], ids[b]) for a, b in zip(i.tolist(), j.tolist())],
            (pool, pool),
            s.tolist(),
            cal,
            mean,
        )
        keep = r >= cal.threshold
        i, j, s, thr = i[keep], j[keep], r[keep], cal.threshold
    ok, extra, vcounts, vmetrics = verify_pairs(
        v,
        folder,
        "dedup",
        [(ids[a], ids[b]) for a, b in zip(i.tolist(), j.tolist())],
        (pool, pool),
        [ids[x] for x in np.concatenate([i, j]).tolist()],
        [{"a": ids[a], "b": ids[b], "similarity": round(float(x), 5)} for a, b, x in zip(i, j, s)],
        ctx.seed,
        ctx.progress,
    )
    if ok is not None:
        i, j, s = i[ok], j[ok], s[ok]
    meta = ctx.pool_meta()
    pixels = [meta[x]["width"] * meta[x]["height"] for x in ids]
    removals, labels = dd.dedup(len(ids), i, j, s, pixels, ids)
    save_npy(folder / "nn1_similarity.npy", nn1.astype(np.float32))
    save_npy(folder / "labels.npy", labels)
    write_jsonl(
        folder / "removals.jsonl",
        [
            {
                "id": ids[r.removed],
                "kept": ids[r.kept],
                "linked_to": ids[r.linked_to],
                "similarity": round(r.similarity, 5),
            }
            for r in removals
        ],
    )
    (folder / ".pool_copy_centered.npy").unlink(missing_ok=True)
    counts = {
        "pool": len(ids),
        "byte_duplicates_at_ingest": _byte_duplicates(pool),
        "near_duplicates_removed": len(removals),
        "duplicate_groups": int((np.bincount(labels) > 1).sum()),
        "edges": int(i.size),
        **vcounts,
    }
    extra = {
        "index": choose_factory(rows.shape[0], rows.shape[1], opts),
        "features": d.features,
        "threshold": thr,
        "calibration": cal_info,
        "keeper_policy": "most pixels, then smallest id",
        **extra,
    }
    artifacts = {"removals": "removals.jsonl", "labels": "labels.npy", "nn1": "nn1_similarity.npy"}
    metrics = {**vmetrics, **({"dedup.copy_threshold": thr} if calibrated else {})}
    return Manifest("curate/dedup", h, artifacts=artifacts, counts=counts, metrics=metrics, extra=extra)


STEP = Step("dedup", "dedup", _hash, run)
