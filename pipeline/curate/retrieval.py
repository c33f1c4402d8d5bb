"""Retrieval of pool images that resemble a seed set (DINOv2's LVD-142M step).

* sample-based (:func:`knn_retrieve`): the ``k`` nearest pool images of every
  seed. One image can be retrieved by many seeds (a *collision*); it is kept
  once, attributed to its most similar seed, and the collisions are counted.
* cluster-based (:func:`cluster_retrieve`): k-means on the pool; every cluster
  a seed falls into contributes up to ``per_cluster`` of its images.
Seedless, balanced curation lives in :mod:`pipeline.curate.kmeans`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Retrieved:
    """A retrieved set with its lineage.

    Attributes:
        items: Pool indices, sorted.
        source: Per item, the seed index (knn) or cluster id (cluster, hierarchical) that brought it in.
        similarity: Per item, cosine similarity to that seed or centroid.
        hits: Per item, how many seeds retrieved it (knn) or seeds in its cluster (cluster).
        stats: Counts for the report.
    """

    items: np.ndarray
    source: np.ndarray
    similarity: np.ndarray
    hits: np.ndarray
    stats: dict[str, int] = field(default_factory=dict)


def knn_retrieve(
    sims: np.ndarray, ids: np.ndarray, allowed: np.ndarray | None = None, min_similarity: float = -1.0
) -> Retrieved:
    """Union of every seed's neighbours.

    Args:
        sims, ids: ``(n_seeds, k)`` search result of the seeds in a pool index.
        allowed: Boolean mask over the pool (after dedup/decontamination); others are skipped.
        min_similarity: Neighbours below this cosine similarity are not taken.
    """
    n_seeds, k = ids.shape
    seed = np.repeat(np.arange(n_seeds), k)
    item, s = ids.reshape(-1), sims.reshape(-1)
    ok = (item >= 0) & (s >= min_similarity)
    if allowed is not None:
        ok &= allowed[np.clip(item, 0, None)]
    seed, item, s = seed[ok], item[ok], s[ok]
    order = np.lexsort((-s, item))  # per item, its most similar seed first
    seed, item, s = seed[order], item[order], s[order]
    first = np.ones(item.size, bool)
    first[1:] = item[1:] != item[:-1]
    uniq, hits = np.unique(item, return_counts=True)
    stats = {
        "pairs": int(item.size),
        "unique": int(uniq.size),
        "collisions": int(item.size - uniq.size),
        "items_hit_by_several_seeds": int((hits > 1).sum()),
        "max_hits": int(hits.max()) if hits.size else 0,
    }
    return Retrieved(item[first], seed[first], s[first].astype(np.float32), hits, stats)


def cluster_retrieve(
    pool_labels: np.ndarray,
    pool_sim: np.ndarray,
    seed_labels: np.ndarray,
    per_cluster: int | None = None,
    allowed: np.ndarray | None = None,
    seed: int = 0,
) -> Retrieved:
    """Pool images from the clusters the seeds fall into.

    Args:
        pool_labels, pool_sim: Each pool item's cluster and similarity to its centroid.
        seed_labels: Each seed's cluster.
        per_cluster: At most this many images per cluster (random); ``None`` takes all.
        allowed: Boolean mask over the pool; others are skipped.
        seed: Seed of the random picks.
    """
    rng = np.random.default_rng(seed)
    clusters, n_seeds = np.unique(seed_labels, return_counts=True)
    seeds_in = dict(zip(clusters.tolist(), n_seeds.tolist()))
    ok = np.isin(pool_labels, clusters)
    if allowed is not None:
        ok &= allowed
    chosen: list[np.ndarray] = []
    for c in clusters.tolist():
        idx = np.flatnonzero(ok & (pool_labels == c))
        if per_cluster is not None and idx.size > per_cluster:
            idx = np.sort(rng.choice(idx, size=per_cluster, replace=False))
        chosen.append(idx)
    items = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    src = pool_labels[items]
    hits = np.array([seeds_in[int(c)] for c in src], np.int64)
    stats = {
        "seed_clusters": int(clusters.size),
        "unique": int(items.size),
        "seeds_sharing_a_cluster": int(seed_labels.size - clusters.size),
    }
    return Retrieved(items, src, pool_sim[items].astype(np.float32), hits, stats)
