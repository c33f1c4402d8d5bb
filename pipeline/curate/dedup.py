"""Near-duplicate removal: kNN graph -> threshold -> connected components -> one keeper each.

Copies of copies chain together (A~B, B~C while A and C fall just under the
threshold), so duplicates are grouped by connected components of the
thresholded kNN graph (union-find), as in DINOv2's LVD-142M pipeline, and each
group keeps one representative.

Keeper policy (:func:`pick_keepers`): the largest image (most pixels, since a
copy is usually a downscaled or cropped version), ties broken by the smaller id
so that the choice is stable across runs and machines.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving and union by size."""

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, a: int) -> int:
        p = self.parent
        while p[a] != a:
            p[a] = p[p[a]]
            a = int(p[a])
        return a

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]
        return True

    def labels(self) -> np.ndarray:
        """Component label (the root) of every element."""
        return np.array([self.find(i) for i in range(len(self.parent))], dtype=np.int64)


def edges_from_knn(
    sims: np.ndarray, ids: np.ndarray, threshold: float, rows_per_item: int = 1, offset: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges ``(i, j, sim)`` with ``i < j`` and ``sim >= threshold``.

    Args:
        sims, ids: kNN result of the items against an index over the same items.
        threshold: Cosine similarity at or above which two items are duplicates.
        rows_per_item: Index rows per item (several crops of one image); an
            index row ``r`` belongs to item ``r // rows_per_item``.
        offset: Item index of the first query row (batched search).

    Returns:
        Arrays ``i``, ``j`` (int64) and ``sim`` (float32), one entry per pair,
        keeping the highest similarity when a pair is found more than once.
    """
    q = np.repeat(np.arange(offset, offset + sims.shape[0], dtype=np.int64), sims.shape[1])
    t = ids.reshape(-1) // rows_per_item
    s = sims.reshape(-1)
    keep = (s >= threshold) & (ids.reshape(-1) >= 0) & (q != t)
    return _unique_pairs(np.minimum(q, t)[keep], np.maximum(q, t)[keep], s[keep])


def _unique_pairs(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if a.size == 0:
        return a.astype(np.int64), b.astype(np.int64), s.astype(np.float32)
    order = np.lexsort((-s, b, a))  # per pair, the best similarity first
    a, b, s = a[order], b[order], s[order]
    first = np.ones(a.size, bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], s[first].astype(np.float32)


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component labels of ``n`` nodes joined by edges ``(i, j)``.

    Same result as :class:`UnionFind` (the tests check it), computed by SciPy's
    compiled ``connected_components`` so that 1e8 edges take seconds, not hours.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(i.size, np.int8), (i, j)), shape=(n, n))
    return connected_components(g, directed=False)[1].astype(np.int64)


def edges_batched(
    search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    queries: np.ndarray,
    k: int,
    threshold: float,
    rows_per_item: int = 1,
    batch_rows: int = 65_536,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Self-kNN of ``queries`` (item ``q`` is query row ``q``) kept as thresholded edges, batch by batch.

    Only edges at or above ``threshold`` are kept, so memory is the edges plus
    one batch of neighbours, not ``n * k`` results.

    Returns:
        ``i, j, sim`` as :func:`edges_from_knn`, and every item's best similarity
        to another item (for the histogram).
    """
    n = queries.shape[0]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    nn1 = np.empty(n, np.float32)
    for s in tqdm(range(0, n, batch_rows), desc="dedup search", disable=not progress, leave=False):
        e = min(n, s + batch_rows)
        sims, ids = search(np.ascontiguousarray(queries[s:e], dtype=np.float32), k)
        own = (ids // rows_per_item) == np.arange(s, e)[:, None]
        nn1[s:e] = np.where(own | (ids < 0), -np.inf, sims).max(axis=1)
        a, b, v = edges_from_knn(sims, ids, threshold, rows_per_item, offset=s)
        parts.append((a, b, v))
    i = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    j = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    v = np.concatenate([p[2] for p in parts]) if parts else np.zeros(0, np.float32)
    # The same pair can come from both ends in different batches: keep its best similarity once.
    i, j, v = _unique_pairs(i, j, v)
    return i, j, v, nn1


@dataclass(frozen=True)
class Removal:
    """One removed item: ``removed`` in favour of ``kept``; ``similarity`` to ``linked_to``.

    ``linked_to`` is ``kept`` when the two are directly similar, otherwise the
    group member whose edge brought ``removed`` into the group.
    """

    removed: int
    kept: int
    linked_to: int
    similarity: float


def pick_keepers(labels: np.ndarray, pixels: Sequence[int], ids: Sequence[str]) -> dict[int, int]:
    """The keeper of every group with more than one member: most pixels, then smallest id."""
    groups: dict[int, list[int]] = {}
    for idx in np.flatnonzero(np.bincount(labels)[labels] > 1).tolist():
        groups.setdefault(int(labels[idx]), []).append(idx)
    return {
        lab: min(members, key=lambda m: (-int(pixels[m]), ids[m]))
        for lab, members in groups.items()
        if len(members) > 1
    }


def dedup(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    sim: np.ndarray,
    pixels: Sequence[int],
    ids: Sequence[str],
) -> tuple[list[Removal], np.ndarray]:
    """Group duplicates and keep one per group.

    Args:
        n: Number of items.
        i, j, sim: Edges from :func:`edges_from_knn`.
        pixels: Width * height of every item (keeper policy).
        ids: Stable ids of every item (tie break).

    Returns:
        The removals (sorted by removed index) and the component labels.
    """
    labels = components(n, i, j)
    keepers = pick_keepers(labels, pixels, ids)
    best: dict[int, tuple[float, int]] = {}  # item -> (its best edge sim, other end)
    direct: dict[tuple[int, int], float] = {}
    for a, b, s in zip(i.tolist(), j.tolist(), sim.tolist()):
        direct[(a, b)] = s
        for x, y in ((a, b), (b, a)):
            if x not in best or s > best[x][0]:
                best[x] = (s, y)
    out: list[Removal] = []
    in_groups = np.flatnonzero(np.bincount(labels, minlength=n)[labels] > 1)  # skip the singletons
    for idx in in_groups.tolist():
        keeper = keepers[int(labels[idx])]
        if keeper == idx:
            continue
        d = direct.get((min(idx, keeper), max(idx, keeper)))
        if d is not None:
            out.append(Removal(idx, keeper, keeper, float(d)))
        else:
            s, other = best[idx]
            out.append(Removal(idx, keeper, other, float(s)))
    return out, labels
