"""Calibrated copy thresholds and refined pair scores inside the dedup and decontaminate steps.

The algorithms are :mod:`pipeline.curate.calibrate` and
:mod:`pipeline.curate.copy_match`; this module draws the calibration sample,
finds each sampled image's nearest other image in the searched index, reads
pixels from the ingest shards, and writes ``copy_calibration.json`` (thresholds,
synthetic recall per kind, estimated false-match rate), ``calibration.npz``
(the score distributions, for the report) and ``refined.jsonl`` (every
candidate pair with its aligned and refined scores) into the step folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from pipeline.core.manifest import atomic_write_bytes, config_hash
from pipeline.curate import calibrate as cb
from pipeline.curate.copy_align import align_pairs, work_array
from pipeline.curate.copy_match import refine_match, saturated_scores
from pipeline.curate.copy_saturation import mismatched, saturation
from pipeline.curate.verify import iter_images
from pipeline.stages.curate.context import Context, write_jsonl

log = logging.getLogger(__name__)

Search = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def load_gray(folder: Path, ids: Sequence[str]) -> dict[str, Image.Image]:
    """The images ``ids`` of an ingest shard folder, grayscale (all the descriptor reads)."""
    return {k: im.convert("L") for k, im in iter_images(folder, sorted(set(ids)))} if ids else {}


def calibrate_step(
    ctx: Context,
    folder: Path,
    rows: np.ndarray,
    per: int,
    ids: Sequence[str],
    search: Search,
    target: tuple[Path, Sequence[str], int],
    recall: float,
    all_rows: bool,
    mean: np.ndarray,
) -> cb.CopyCalibration:
    """Calibrate on a seeded sample of the pool; ``target`` = (shard folder, ids, rows per item) of the index.

    ``rows`` are the pool's centred rows (``per`` per item); ``search`` searches the target index.
    The sample's nearest other image in that index is its non-copy neighbour.
    """
    c = ctx.opts.calibration
    rng = np.random.default_rng(ctx.seed)
    take = np.sort(rng.choice(len(ids), size=min(c.images, len(ids)), replace=False))
    same = target[0] == ctx.ingest / "pool"
    q_rows = np.concatenate(
        [
            np.asarray(rows[t * per : (t + 1) * per] if all_rows else rows[t * per : t * per + 1], np.float32)
            for t in take.tolist()
        ]
    )
    q_per = per if all_rows else 1
    sims, nn = search(np.ascontiguousarray(q_rows), min(4 * target[2] + 4, 256))
    neighbour: list[int] = []
    for i, t in enumerate(take.tolist()):
        s, n = sims[i * q_per : (i + 1) * q_per].ravel(), nn[i * q_per : (i + 1) * q_per].ravel() // target[2]
        ok = (n >= 0) & ~((n == t) & same)
        # The second-nearest distinct image: the nearest may be a real copy.
        best: dict[int, float] = {}
        for item, sim in zip(n[ok].tolist(), s[ok].tolist()):
            best[item] = max(best.get(item, -np.inf), sim)
        ranked = sorted(best, key=lambda x: -best[x])
        neighbour.append(ranked[1] if len(ranked) > 1 else -1)
    keep = [(t, n) for t, n in zip(take.tolist(), neighbour) if n >= 0]
    pool_imgs = load_gray(ctx.ingest / "pool", [ids[t] for t in take.tolist()])
    tgt_imgs = load_gray(target[0], [target[1][n] for _, n in keep])
    # The fine stage's layout: the sample's mean fine thumbnail (the pool mean of the coarse rows' role).
    fine_mean = cb.fine_mean_of(list(pool_imgs.values()), ctx.opts.embed)
    scores = synthetic_scores(ctx, [ids[t] for t in take.tolist()], pool_imgs, mean, fine_mean)
    noncopy = cb.noncopy_scores(
        [pool_imgs[ids[t]] for t, _ in keep],
        [tgt_imgs[target[1][n]] for _, n in keep],
        ctx.opts.embed,
        mean,
        fine_mean,
    )
    max_false = c.decontam_max_false if all_rows else c.dedup_max_false
    cal = replace(
        cb.calibrate(scores, list(c.suite.kinds), noncopy, recall, c.margin, all_rows, max_false), fine_mean=fine_mean
    )
    info: dict[str, Any] = {
        "rule": (
            f"refined threshold keeps {recall:g} of synthetic copies of every kind, kNN candidate and aligned "
            f"thresholds {(1 + recall) / 2:g}, all minus margin {c.margin:g}; raised where needed so that at most "
            f"{max_false:g} of the sample's second-nearest neighbours reach it"
        ),
        "kinds": list(c.suite.kinds),
        **cal.summary(),
    }
    atomic_write_bytes(folder / "copy_calibration.json", json.dumps(info, indent=1).encode())
    arrays: dict[str, Any] = {"noncopy": cal.noncopy}
    arrays.update({f"knn_{k}": v for k, v in cal.knn.items()})
    arrays.update({f"aligned_{k}": v for k, v in cal.align.items()})
    arrays.update({f"refined_{k}": v for k, v in cal.refined.items()})
    np.savez(folder / "calibration.npz", **arrays)
    log.info(
        "copy thresholds (%s): candidate %.4f, aligned %.4f, copy %.4f; synthetic recall %s; "
        "estimated false-match rate %.4f",
        folder.name,
        cal.candidate,
        cal.aligned,
        cal.threshold,
        {k: round(v, 3) for k, v in cal.synthetic_recall().items()},
        cal.false_match_rate(),
    )
    return cal


def synthetic_scores(
    ctx: Context,
    sample: Sequence[str],
    images: dict[str, Image.Image],
    mean: np.ndarray,
    fine_mean: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:func:`calibrate.copy_scores` of the sample, computed once for dedup and decontamination.

    Cached in ``<curate>/calibration/<hash>.npz``, the hash covering the descriptor and calibration
    settings, the seed and the sample, so the two steps share one run of the synthetic copies.
    """
    h = config_hash(
        asdict(ctx.opts.embed), asdict(ctx.opts.calibration), ctx.seed, list(sample), ctx.emb_hash.get("pool")
    )
    path = ctx.root / "calibration" / f"{h}.npz"
    if path.is_file():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    scores = cb.copy_scores(
        [images[k] for k in sample], ctx.opts.embed, ctx.opts.calibration.suite, mean, ctx.seed, fine_mean
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    arrays: dict[str, Any] = dict(scores)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return scores


def refine(
    ctx: Context,
    folder: Path,
    pairs: Sequence[tuple[str, str]],
    roots: tuple[Path, Path],
    sims: Sequence[float],
    cal: cb.CopyCalibration,
    mean: np.ndarray,
) -> np.ndarray:
    """Aligned, then refined scores of candidate ``(id_a, id_b)`` pairs (``id_a`` from ``roots[0]``).

    Every pair is aligned (:func:`copy_align.align_pairs`, batched per image); those at or above the
    aligned threshold, at most ``calibration.refined`` per image (its best aligned), are refined.
    Pairs saturated differently are also scored clipped alike (:func:`copy_match.saturated_scores`).
    Returns the refined scores, NaN where a pair was not refined; writes ``refined.jsonl``.
    """
    o = ctx.opts.embed
    if roots[0] == roots[1]:
        a_imgs = b_imgs = load_gray(roots[0], [x for p in pairs for x in p])
        keys = [(0, k) for k in sorted(a_imgs)]
    else:
        a_imgs, b_imgs = load_gray(roots[0], [a for a, _ in pairs]), load_gray(roots[1], [b for _, b in pairs])
        keys = [(0, k) for k in sorted(a_imgs)] + [(1, k) for k in sorted(b_imgs)]
    imgs = (a_imgs, b_imgs)
    at = {k: n for n, k in enumerate(keys)}
    b_side = 0 if b_imgs is a_imgs else 1
    idx = [(at[(0, a)], at[(b_side, b)]) for a, b in pairs]
    arrays = [work_array(imgs[s][k], o.copy_grid) for s, k in keys]
    matches = align_pairs(idx, arrays, [imgs[s][k].size for s, k in keys], o, mean, progress=ctx.progress)
    aligned = np.array([m.score for m in matches], np.float32)
    ia, ib = np.array([i for i, _ in idx], np.int64), np.array([j for _, j in idx], np.int64)
    todo = np.flatnonzero(aligned >= cal.aligned)
    todo = todo[cb.best_per_item(ia[todo], ib[todo], aligned[todo], ctx.opts.calibration.refined)]
    out = np.full(len(pairs), np.nan, np.float32)
    for p in tqdm(todo.tolist(), desc="refine", disable=not ctx.progress, leave=False):
        a, b = pairs[p]
        out[p] = refine_match(a_imgs[a], b_imgs[b], matches[p], o, mean, cal.fine_mean)
    # A pair whose images are saturated differently (a brightened copy) is also scored clipped alike.
    # At most ``refined`` such pairs per image, its best by kNN score.
    sat = [saturation(np.asarray(imgs[s][k])) for s, k in keys]
    clipped = np.array([mismatched(sat[i], sat[j]) for i, j in idx], bool)
    rows = np.flatnonzero(clipped)
    sims_arr = np.asarray(sims, np.float32)
    rows = rows[cb.best_per_item(ia[rows], ib[rows], sims_arr[rows], ctx.opts.calibration.refined)]
    for p in rows.tolist():
        a, b = pairs[p]
        got = saturated_scores(a_imgs[a], b_imgs[b], o, mean, cal.fine_mean)
        if got is not None:  # the better of both, as the calibration scores its clipped copies
            aligned[p] = max(float(aligned[p]), got[0])
            if aligned[p] >= cal.aligned:
                out[p] = np.fmax(out[p], got[1])
    write_jsonl(
        folder / "refined.jsonl",
        [
            {
                "a": a,
                "b": b,
                "similarity": round(float(s), 5),
                "aligned": round(float(x), 5),
                "refined": None if np.isnan(r) else round(float(r), 5),
                "copy": bool(r >= cal.threshold),
            }
            for (a, b), s, x, r in zip(pairs, sims, aligned, out)
        ],
    )
    return out
