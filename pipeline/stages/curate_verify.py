"""Verification of candidate pairs inside the dedup and decontaminate steps (config in, scores out).

The algorithm is :mod:`pipeline.curate.verify`; this module reads the
config section (``curate.dedup.verify`` or ``curate.decontam.verify``), draws
the calibration sample, reads the candidates' pixels from the ingest shards
and writes ``calibration.json`` and ``candidates.jsonl`` into the step folder.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig
from tqdm.auto import tqdm

from pipeline.core.manifest import atomic_write_bytes
from pipeline.curate import verify as vf

log = logging.getLogger(__name__)


def options(v: DictConfig) -> vf.VerifyOptions:
    return vf.VerifyOptions(size=int(v.size), sigma=float(v.sigma), scales=tuple(float(s) for s in v.scales),
                            margin=int(v.margin), grid=int(v.grid), floor=float(v.floor))


def threshold(v: DictConfig, pool: Path, pool_ids: Sequence[str], seed: int, folder: Path) -> tuple[vf.Calibration, dict[str, Any]]:
    """The verification thresholds: ``v.threshold`` / ``v.outlier_threshold`` where set, else calibrated.

    Calibration uses synthetic copies of a seeded sample of ``pool_ids``; the
    steps pass the pool images of their candidate pairs, so the thresholds keep
    ``v.keep`` of synthetic copies of the very images being judged.
    """
    fixed = (v.threshold, v.outlier_threshold)
    pool_ids = sorted(set(pool_ids))
    if None not in fixed or not pool_ids:
        cal = vf.Calibration(float(fixed[0] if fixed[0] is not None else -1.0),
                             float(fixed[1] if fixed[1] is not None else np.inf), float(v.keep), np.zeros((0, 2), np.float32))
        info: dict[str, Any] = {"rule": "fixed" if pool_ids else "no candidates"}
    else:
        rng = np.random.default_rng(seed)
        take = rng.choice(len(pool_ids), size=min(int(v.calibration_images), len(pool_ids)), replace=False)
        imgs = [im for _, im in vf.iter_images(pool, [pool_ids[t] for t in take.tolist()])]
        cal = vf.calibrate(imgs, options(v), keep=float(v.keep), seed=seed, ops=list(v.calibration_ops))
        q = np.quantile(cal.scores, [0.0, 0.01, 0.05, 0.5, 0.95, 0.99, 1.0], axis=0).round(4)
        info = {"rule": f"synthetic copies: structure >= {1 - cal.keep:.3g} quantile, outlier <= {cal.keep:.3g} quantile",
                "keep": cal.keep, "images": len(imgs), "ops": list(v.calibration_ops),
                "synthetic_structure_quantiles_0_1_5_50_95_99_100": q[:, 0].tolist(),
                "synthetic_outlier_quantiles_0_1_5_50_95_99_100": q[:, 1].tolist(),
                "synthetic_accepted": float(cal.accepts(cal.scores).mean())}
        cal = vf.Calibration(float(fixed[0]) if fixed[0] is not None else cal.structure,
                             float(fixed[1]) if fixed[1] is not None else cal.outlier, cal.keep, cal.scores)
        log.info("verification thresholds: structure >= %.4f, outlier <= %.2f (%d synthetic copies)", cal.structure, cal.outlier, len(imgs))
    info.update({"structure_threshold": round(cal.structure, 5), "outlier_threshold": round(cal.outlier, 4)})
    atomic_write_bytes(folder / "calibration.json", json.dumps(info, indent=1).encode())
    return cal, info


def score(
    v: DictConfig, pairs: Sequence[tuple[str, str]], folders: tuple[Path, Path], progress: bool = False
) -> np.ndarray:
    """``(n, 2)`` verification scores of ``(id_a, id_b)`` pairs.

    ``id_a`` is read from ``folders[0]``, ``id_b`` from ``folders[1]``.
    """
    opts = options(v)
    if not pairs:
        return np.zeros((0, 2), np.float32)
    if folders[0] == folders[1]:
        ta = tb = vf.load_thumbnails(folders[0], {x for p in pairs for x in p}, opts.size)
    else:
        ta = vf.load_thumbnails(folders[0], {a for a, _ in pairs}, opts.size)
        tb = vf.load_thumbnails(folders[1], {b for _, b in pairs}, opts.size)
    rows = [tuple(vf.pair_score(ta[a], tb[b], opts)) for a, b in tqdm(pairs, desc="verify", disable=not progress, leave=False)]
    return np.array(rows, dtype=np.float32).reshape(-1, 2)


def rows(scores: np.ndarray, cal: vf.Calibration) -> list[dict[str, Any]]:
    """Per-pair fields for ``candidates.jsonl``."""
    ok = cal.accepts(scores)
    return [{"verify": round(float(s), 5), "outlier": round(float(o), 3), "copy": bool(c)} for (s, o), c in zip(scores, ok)]


def summary(scores: np.ndarray, cal: vf.Calibration) -> dict[str, int]:
    """Counts of verified candidates, for the manifest."""
    ok = cal.accepts(scores)
    return {"candidates": int(ok.size), "verified": int(ok.sum()), "rejected": int((~ok).sum())}
