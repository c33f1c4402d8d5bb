"""Decontamination: drop pool images that are near-copies of evaluation images.

Training on a copy of a test image inflates every later evaluation, so pool
images whose copy descriptor matches any evaluation image are removed. DINOv2
uses a looser threshold here than for self-deduplication: a false removal
costs one training image, a missed copy costs the credibility of the results.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Contamination:
    """Pool item ``pool`` copies evaluation item ``eval`` with cosine similarity ``similarity``."""

    pool: int
    eval: int
    similarity: float


def _matches(
    sims: np.ndarray, ids: np.ndarray, threshold: float, query_rows_per_item: int, index_rows_per_item: int
) -> Iterator[tuple[int, int, float]]:
    """``(pool item, eval item, similarity)`` of every search hit reaching ``threshold``, in row order."""
    n_rows, k = ids.shape
    q = np.repeat(np.arange(n_rows) // query_rows_per_item, k)
    e = ids.reshape(-1)
    s = sims.reshape(-1)
    ok = (e >= 0) & (s >= threshold)
    return zip(q[ok].tolist(), (e[ok] // index_rows_per_item).tolist(), s[ok].tolist())


def find_contaminated(
    sims: np.ndarray,
    ids: np.ndarray,
    threshold: float,
    query_rows_per_item: int = 1,
    index_rows_per_item: int = 1,
) -> list[Contamination]:
    """Pool items whose best match among the evaluation items reaches ``threshold``.

    Args:
        sims, ids: Search result of pool query rows in an index of evaluation rows.
        threshold: Cosine similarity at or above which a pool image is a copy.
        query_rows_per_item: Query rows per pool item (crops), consecutive.
        index_rows_per_item: Index rows per evaluation item (crops), consecutive.

    Returns:
        One record per contaminated pool item, with its best evaluation match, sorted by pool index.
    """
    best: dict[int, tuple[float, int]] = {}
    for a, b, v in _matches(sims, ids, threshold, query_rows_per_item, index_rows_per_item):
        if a not in best or v > best[a][0]:
            best[a] = (v, b)
    return [Contamination(a, b, float(v)) for a, (v, b) in sorted(best.items())]


def candidate_pairs(
    sims: np.ndarray,
    ids: np.ndarray,
    threshold: float,
    query_rows_per_item: int = 1,
    index_rows_per_item: int = 1,
) -> list[Contamination]:
    """Every distinct ``(pool, eval)`` item pair reaching ``threshold`` (for verification), best similarity each.

    Same arguments as :func:`find_contaminated`, which keeps only each pool item's best match;
    here a pool item may have several candidates, sorted by pool then eval index.
    """
    best: dict[tuple[int, int], float] = {}
    for a, b, v in _matches(sims, ids, threshold, query_rows_per_item, index_rows_per_item):
        if best.get((a, b), -np.inf) < v:
            best[(a, b)] = v
    return [Contamination(a, b, float(v)) for (a, b), v in sorted(best.items())]


def best_per_pool(found: list[Contamination]) -> list[Contamination]:
    """The best match of every pool item among ``found``, sorted by pool index."""
    best: dict[int, Contamination] = {}
    for c in found:
        if c.pool not in best or c.similarity > best[c.pool].similarity:
            best[c.pool] = c
    return [best[p] for p in sorted(best)]


def best_match(sims: np.ndarray, ids: np.ndarray, query_rows_per_item: int = 1) -> np.ndarray:
    """Every query item's best similarity (over its rows and neighbours), for histograms."""
    top = sims[:, 0] if sims.shape[1] else np.full(sims.shape[0], -np.inf, np.float32)
    return top.reshape(-1, query_rows_per_item).max(axis=1)
