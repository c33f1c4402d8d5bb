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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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
    sims: np.ndarray, ids: np.ndarray, threshold: float, rows_per_item: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Undirected edges ``(i, j, sim)`` with ``i < j`` and ``sim >= threshold``.

    Args:
        sims, ids: kNN result of the items against an index over the same items.
        threshold: Cosine similarity at or above which two items are duplicates.
        rows_per_item: Index rows per item (several crops of one image); an
            index row ``r`` belongs to item ``r // rows_per_item``.

    Returns:
        Arrays ``i``, ``j`` (int64) and ``sim`` (float32), one entry per pair,
        keeping the highest similarity when a pair is found more than once.
    """
    q = np.repeat(np.arange(sims.shape[0], dtype=np.int64), sims.shape[1])
    t = ids.reshape(-1) // rows_per_item
    s = sims.reshape(-1)
    keep = (s >= threshold) & (ids.reshape(-1) >= 0) & (q != t)
    a, b, s = np.minimum(q, t)[keep], np.maximum(q, t)[keep], s[keep]
    if a.size == 0:
        return a, b, s.astype(np.float32)
    order = np.lexsort((-s, b, a))  # per pair, the best similarity first
    a, b, s = a[order], b[order], s[order]
    first = np.ones(a.size, bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    return a[first], b[first], s[first].astype(np.float32)


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected-component labels of ``n`` nodes joined by edges ``(i, j)``."""
    uf = UnionFind(n)
    for a, b in zip(i.tolist(), j.tolist()):
        uf.union(a, b)
    return uf.labels()


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
    for idx, lab in enumerate(labels.tolist()):
        groups.setdefault(lab, []).append(idx)
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
    for idx in range(n):
        keeper = keepers.get(int(labels[idx]))
        if keeper is None or keeper == idx:
            continue
        d = direct.get((min(idx, keeper), max(idx, keeper)))
        if d is not None:
            out.append(Removal(idx, keeper, keeper, float(d)))
        else:
            s, other = best[idx]
            out.append(Removal(idx, keeper, other, float(s)))
    return out, labels
