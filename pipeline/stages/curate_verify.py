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
                            margin=int(v.margin), grid=int(v.grid), floor=float(v.floor))  # fmt: skip


def threshold(v: DictConfig, pool: Path, pool_ids: Sequence[str], seed: int, folder: Path) -> tuple[float, dict[str, Any]]:
    """The verification threshold: ``v.threshold`` if set, else calibrated on synthetic copies of ``pool_ids``.

    The steps pass the pool images of their candidate pairs: the threshold then
    keeps ``v.keep`` of synthetic copies of the very images being judged.
    """
    if v.threshold is not None:
        info: dict[str, Any] = {"rule": "fixed", "threshold": float(v.threshold)}
    else:
        pool_ids = sorted(set(pool_ids))
        if not pool_ids:
            info = {"rule": "no candidates", "threshold": 1.0}
            atomic_write_bytes(folder / "calibration.json", json.dumps(info, indent=1).encode())
            return 1.0, info
        rng = np.random.default_rng(seed)
        take = rng.choice(len(pool_ids), size=min(int(v.calibration_images), len(pool_ids)), replace=False)
        imgs = [im for _, im in vf.iter_images(pool, [pool_ids[t] for t in take.tolist()])]
        cal = vf.calibrate(imgs, options(v), keep=float(v.keep), seed=seed, ops=list(v.calibration_ops))
        q = np.quantile(cal.scores, [0.0, 0.01, 0.05, 0.5]).round(4).tolist()
        info = {"rule": f"{1 - cal.keep:.3g} quantile of synthetic-copy scores", "threshold": round(cal.threshold, 5),
                "keep": cal.keep, "images": len(imgs), "ops": list(v.calibration_ops), "synthetic_quantiles_0_1_5_50": q}  # fmt: skip
        log.info("verification threshold %.4f (keeps %.0f%% of %d synthetic copies)", cal.threshold, 100 * cal.keep, len(imgs))
    atomic_write_bytes(folder / "calibration.json", json.dumps(info, indent=1).encode())
    return float(info["threshold"]), info


def score(
    v: DictConfig, pairs: Sequence[tuple[str, str]], folders: tuple[Path, Path], progress: bool = False
) -> np.ndarray:
    """Verification scores of ``(id_a, id_b)`` pairs, ``id_a`` read from ``folders[0]``, ``id_b`` from ``folders[1]``."""
    opts = options(v)
    if not pairs:
        return np.zeros(0, np.float32)
    if folders[0] == folders[1]:
        ta = tb = vf.load_thumbnails(folders[0], {x for p in pairs for x in p}, opts.size)
    else:
        ta = vf.load_thumbnails(folders[0], {a for a, _ in pairs}, opts.size)
        tb = vf.load_thumbnails(folders[1], {b for _, b in pairs}, opts.size)
    return np.array([vf.pair_score(ta[a], tb[b], opts) for a, b in tqdm(pairs, desc="verify", disable=not progress, leave=False)],
                    dtype=np.float32)  # fmt: skip


def summary(scores: np.ndarray, thr: float) -> dict[str, float]:
    """Counts of verified candidates, for the manifest."""
    return {"candidates": int(scores.size), "verified": int((scores >= thr).sum()), "rejected": int((scores < thr).sum())}
