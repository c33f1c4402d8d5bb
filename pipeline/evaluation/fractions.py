"""Label-fraction sampling: which training labels a few-label run may use.

Subsets are stratified (every class keeps its share, and at least
``min_per_class`` examples so that every class is seen), seeded, and nested:
for one seed, the 5 % subset contains the 1 % subset, so a curve over fractions
measures more labels, not different labels. Only training indices are ever
drawn from, so a subset can never touch the test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nested_label_subsets(
    y: np.ndarray,
    train_idx: np.ndarray,
    fractions: Sequence[float],
    seed: int,
    min_per_class: int = 1,
) -> dict[float, np.ndarray]:
    """Stratified, nested subsets of ``train_idx`` for each fraction.

    Args:
        y: Class id of every sample of the evaluation set (test samples included).
        train_idx: Indices into ``y`` that may be used for training.
        fractions: Label fractions in ``(0, 1]``.
        seed: Seed of the per-class shuffles; one seed gives one nested family.
        min_per_class: Each class keeps at least this many examples (or all it has).

    Returns:
        ``{fraction: sorted indices into y}``.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    for f in fractions:
        if not 0.0 < f <= 1.0:
            raise ValueError(f"label fraction {f} is outside (0, 1]")
    rng = np.random.default_rng(seed)
    labels = np.asarray(y)[train_idx]
    # One shuffle per class, taken in sorted class order, so the family is a
    # pure function of (y, train_idx, seed); every fraction takes a prefix.
    perms = {}
    for c in np.unique(labels):
        members = np.sort(train_idx[labels == c])
        perms[int(c)] = members[rng.permutation(len(members))]
    out: dict[float, np.ndarray] = {}
    for f in fractions:
        parts = []
        for members in perms.values():
            n = max(min_per_class, round(f * len(members)))
            parts.append(members[: min(n, len(members))])
        out[float(f)] = np.sort(np.concatenate(parts))
    return out
