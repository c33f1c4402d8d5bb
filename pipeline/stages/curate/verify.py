"""Verification of candidate pairs inside the dedup and decontaminate steps (settings in, scores out).

The algorithm is :mod:`pipeline.curate.verify`; this module draws the
calibration sample, reads the candidates' pixels from the ingest shards and
writes ``calibration.json`` and ``candidates.jsonl`` into the step folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from pipeline.config.curate import VerifyConfig
from pipeline.core.manifest import atomic_write_bytes
from pipeline.curate import verify as vf
from pipeline.stages.curate.context import write_jsonl

log = logging.getLogger(__name__)


def threshold(
    v: VerifyConfig, pool: Path, pool_ids: Sequence[str], seed: int, folder: Path
) -> tuple[vf.Calibration, dict[str, Any]]:
    """The verification thresholds: ``v.threshold`` / ``v.outlier_threshold`` where set, else calibrated.

    Calibration uses synthetic copies of a seeded sample of ``pool_ids``; the
    steps pass the pool images of their candidate pairs, so the thresholds keep
    ``v.keep`` of synthetic copies of the very images being judged.
    """
    fixed = (v.threshold, v.outlier_threshold)
    pool_ids = sorted(set(pool_ids))
    info: dict[str, Any]
    if None not in fixed or not pool_ids:
        structure = float(fixed[0]) if fixed[0] is not None else -1.0
        outlier = float(fixed[1]) if fixed[1] is not None else float(np.inf)
        cal = vf.Calibration(structure, outlier, float(v.keep), np.zeros((0, 2), np.float32))
        info = {"rule": "fixed" if pool_ids else "no candidates"}
    else:
        rng = np.random.default_rng(seed)
        take = rng.choice(len(pool_ids), size=min(v.calibration_images, len(pool_ids)), replace=False)
        imgs = [im for _, im in vf.iter_images(pool, [pool_ids[t] for t in take.tolist()])]
        cal = vf.calibrate(imgs, v, keep=float(v.keep), seed=seed, ops=list(v.calibration_ops))
        q = np.quantile(cal.scores, [0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0], axis=0).round(4)
        info = {
            "rule": f"synthetic copies: structure >= {1 - cal.keep:.3g} quantile, outlier <= {cal.keep:.3g} quantile",
            "keep": cal.keep,
            "images": len(imgs),
            "ops": list(v.calibration_ops),
            "synthetic_structure_quantiles_0_1_5_50_95_99_100": q[:, 0].tolist(),
            "synthetic_outlier_quantiles_0_1_5_50_95_99_100": q[:, 1].tolist(),
            "synthetic_accepted": float(cal.accepts(cal.scores).mean()),
        }
        structure = float(fixed[0]) if fixed[0] is not None else cal.structure
        outlier = float(fixed[1]) if fixed[1] is not None else cal.outlier
        cal = vf.Calibration(structure, outlier, cal.keep, cal.scores)
        log.info(
            "verification thresholds: structure >= %.4f, outlier <= %.2f (%d synthetic copies)",
            cal.structure,
            cal.outlier,
            len(imgs),
        )
    info.update({"structure_threshold": round(cal.structure, 5), "outlier_threshold": round(cal.outlier, 4)})
    atomic_write_bytes(folder / "calibration.json", json.dumps(info, indent=1).encode())
    return cal, info


def score(
    v: VerifyConfig, pairs: Sequence[tuple[str, str]], folders: tuple[Path, Path], progress: bool = False
) -> np.ndarray:
    """``(n, 2)`` scores of ``(id_a, id_b)`` pairs, ``id_a`` read from ``folders[0]``, ``id_b`` from ``folders[1]``."""
    if not pairs:
        return np.zeros((0, 2), np.float32)
    if folders[0] == folders[1]:
        ta = tb = vf.load_thumbnails(folders[0], {x for p in pairs for x in p}, v.size)
    else:
        ta = vf.load_thumbnails(folders[0], {a for a, _ in pairs}, v.size)
        tb = vf.load_thumbnails(folders[1], {b for _, b in pairs}, v.size)
    bar = tqdm(pairs, desc="verify", disable=not progress, leave=False)
    rows = [tuple(vf.pair_score(ta[a], tb[b], v)) for a, b in bar]
    return np.array(rows, dtype=np.float32).reshape(-1, 2)


def rows(scores: np.ndarray, cal: vf.Calibration) -> list[dict[str, Any]]:
    """Per-pair fields for ``candidates.jsonl``."""
    ok = cal.accepts(scores)
    return [
        {"verify": round(float(s), 5), "outlier": round(float(o), 3), "copy": bool(c)} for (s, o), c in zip(scores, ok)
    ]


def summary(scores: np.ndarray, cal: vf.Calibration) -> dict[str, int]:
    """Counts of verified candidates, for the manifest."""
    ok = cal.accepts(scores)
    return {"candidates": int(ok.size), "verified": int(ok.sum()), "rejected": int((~ok).sum())}


def verify_pairs(
    v: VerifyConfig,
    folder: Path,
    prefix: str,
    pairs: list[tuple[str, str]],
    roots: tuple[Path, Path],
    calibrate_ids: list[str],
    records: list[dict[str, Any]],
    seed: int,
    progress: bool = False,
) -> tuple[np.ndarray | None, dict[str, Any], dict[str, int], dict[str, float]]:
    """Confirm candidate pairs by the aligned local comparison, when ``v.enabled``.

    Writes ``calibration.json`` and ``candidates.jsonl`` (``records`` plus the scores) and
    removes both first, so a run with verification off leaves none from an earlier run.

    Returns:
        The accepted mask over ``pairs`` (None when off), then the manifest's extra, counts and metrics.
    """
    for stale in ("candidates.jsonl", "calibration.json"):
        (folder / stale).unlink(missing_ok=True)
    if not v.enabled:
        return None, {}, {}, {}
    cal, info = threshold(v, roots[0], calibrate_ids, seed, folder)
    vs = score(v, pairs, roots, progress)
    write_jsonl(folder / "candidates.jsonl", [{**r, **x} for r, x in zip(records, rows(vs, cal))])
    counts = {f"verify_{k}": n for k, n in summary(vs, cal).items()}
    info.update(counts)
    metrics = {f"{prefix}.verify_structure_threshold": cal.structure, f"{prefix}.verify_outlier_threshold": cal.outlier}
    return cal.accepts(vs), {"verification": info}, counts, metrics
