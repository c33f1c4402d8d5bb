"""Spherical k-means with FAISS, and the hierarchical k-means of Vo et al. (2024).

"Automatic Data Curation for Self-Supervised Learning" (Vo et al., 2024) clusters
the pool with k-means, then clusters the centroids again, level by level, and
samples the curated set top-down so that every cluster of every level gets an
equal share (:func:`balanced_sample`). Web-scale pools are dominated by a few
concepts; flat sampling reproduces that imbalance, balanced sampling flattens it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import faiss
import numpy as np

if TYPE_CHECKING:
    from pipeline.curate.knn_index import RowSubset


def fit_kmeans(
    x: np.ndarray | RowSubset, k: int, niter: int = 20, sample: int = 1_000_000, seed: int = 0, nredo: int = 3
) -> np.ndarray:
    """Spherical k-means centroids ``(k, d)`` (float32), trained on at most ``sample`` rows of ``x``.

    ``nredo`` restarts keep the best objective (k-means++ is not in FAISS; restarts
    guard against a poor random initialisation).
    """
    n, d = x.shape
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(n, size=min(n, max(sample, k)), replace=False))
    train = np.ascontiguousarray(x[take], dtype=np.float32)
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=seed,
        spherical=True,
        verbose=False,
        nredo=nredo,
        gpu=faiss.get_num_gpus() > 0,
        max_points_per_centroid=max(256, len(train) // k + 1),
    )
    km.train(train)
    assert km.centroids is not None  # set by train()
    return km.centroids.astype(np.float32)


def assign(x: np.ndarray | RowSubset, centroids: np.ndarray, batch_rows: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid (by cosine) of every row: ``(labels int64, similarity float32)``."""
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    n = x.shape[0]
    labels = np.empty(n, np.int64)
    sims = np.empty(n, np.float32)
    for s in range(0, n, batch_rows):
        e = min(n, s + batch_rows)
        d, i = index.search(np.ascontiguousarray(x[s:e], dtype=np.float32), 1)
        labels[s:e], sims[s:e] = i[:, 0], d[:, 0]
    return labels, sims


@dataclass
class Hierarchy:
    """Cluster labels per level: ``labels[0]`` maps items to level-1 clusters,
    ``labels[l]`` maps level-``l`` clusters to level-``l+1`` clusters."""

    labels: list[np.ndarray]
    item_sim: np.ndarray  # each item's cosine similarity to its level-1 centroid

    def item_labels(self, level: int) -> np.ndarray:
        """Every item's cluster at ``level`` (1-based)."""
        lab = self.labels[0]
        for up in self.labels[1:level]:
            lab = up[lab]
        return lab


def hierarchical_kmeans(
    x: np.ndarray | RowSubset, ks: list[int], niter: int = 20, sample: int = 1_000_000, seed: int = 0
) -> Hierarchy:
    """k-means with ``ks[0]`` clusters on the items, then ``ks[1]`` on those centroids, and so on."""
    if not ks or any(a < b for a, b in itertools.pairwise(ks)):
        raise ValueError(f"hierarchical k-means needs decreasing cluster counts per level, got {ks}")
    cent = fit_kmeans(x, ks[0], niter, sample, seed)
    lab, sim = assign(x, cent)
    labels = [lab]
    for level, k in enumerate(ks[1:], start=1):
        normed = cent / np.maximum(np.linalg.norm(cent, axis=1, keepdims=True), 1e-12)
        up = fit_kmeans(normed, k, niter, sample, seed + level)
        lab_up, _ = assign(normed, up)
        labels.append(lab_up)
        cent = up
    return Hierarchy(labels=labels, item_sim=sim)


def allot(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Split ``budget`` as evenly as possible over groups holding ``sizes`` items.

    Water-filling: a group smaller than its share gives everything, and the
    rest is shared among the others. Returns how many to take from each group.
    """
    sizes = np.asarray(sizes, np.int64)
    take = np.zeros_like(sizes)
    left = min(int(budget), int(sizes.sum()))
    open_ = sizes > 0
    while left > 0 and open_.any():
        share = max(1, left // int(open_.sum()))
        for g in np.flatnonzero(open_):
            add = min(share, int(sizes[g] - take[g]), left)
            take[g] += add
            left -= add
            if take[g] >= sizes[g]:
                open_[g] = False
            if left == 0:
                break
    return take


def balanced_sample(h: Hierarchy, budget: int, seed: int = 0, pick: str = "random") -> np.ndarray:
    """Item indices chosen top-down with an equal share per cluster at every level.

    Args:
        h: The hierarchy.
        budget: How many items to select.
        seed: Seed of the random picks.
        pick: Within a level-1 cluster, ``"random"`` items or the ``"closest"`` to the centroid.
    """
    rng = np.random.default_rng(seed)
    top = len(h.labels)
    item_lab = [h.item_labels(level) for level in range(1, top + 1)]

    def members(level: int, cluster: int | None, parent_mask: np.ndarray) -> np.ndarray:
        return parent_mask if cluster is None else parent_mask & (item_lab[level - 1] == cluster)

    def recurse(level: int, mask: np.ndarray, n: int) -> list[int]:
        if n <= 0:
            return []
        if level == 0:
            idx = np.flatnonzero(mask)
            if pick == "closest":
                return idx[np.argsort(-h.item_sim[idx], kind="stable")[:n]].tolist()
            return rng.choice(idx, size=n, replace=False).tolist()
        clusters, sizes = np.unique(item_lab[level - 1][mask], return_counts=True)
        out: list[int] = []
        for c, t in zip(clusters, allot(sizes, n)):
            out += recurse(level - 1, members(level, int(c), mask), int(t))
        return out

    return np.sort(np.array(recurse(top, np.ones(len(h.item_sim), bool), budget), dtype=np.int64))
