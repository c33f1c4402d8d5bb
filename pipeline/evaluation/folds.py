"""Which labelled images train and which test: grouped cross-validation by default.

A fixed test split of a few hundred images has a noise (about ±0.03 AUROC on ELPV) as large
as the differences it is asked to show, and a random split puts near-identical images
(neighbouring cells of one solar module) on both sides, which flatters every backbone.
So the frozen protocols use stratified *group* k-fold: every labelled image is tested
exactly once per repeat, images of one group are never on both sides, and each repeat
(one seed) draws another partition.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

PROTOCOLS = ("grouped_cv", "stratified_cv", "split")


@dataclass(frozen=True)
class Fold:
    """One train/test partition of the labelled images.

    Attributes:
        seed: The repeat (fold partition) this fold belongs to.
        fold: Its index within the repeat (0 for the fixed split).
        train: Indices the label subsets are drawn from.
        test: Indices scored.
    """

    seed: int
    fold: int
    train: np.ndarray
    test: np.ndarray

    @property
    def label_seed(self) -> int:
        """Seed of this fold's label subsets: one nested family per (repeat, fold)."""
        return self.seed * 1009 + self.fold


def evaluation_folds(
    y: np.ndarray,
    groups: np.ndarray,
    is_test: np.ndarray,
    protocol: str,
    n_folds: int,
    seed: int,
) -> list[Fold]:
    """The folds of one repeat.

    Args:
        y: Class id per image (``-1``: unlabelled, never used).
        groups: Group id per image (images of one group stay on one side).
        is_test: The recipe's fixed split (``protocol="split"`` only).
        protocol: ``grouped_cv``, ``stratified_cv`` or ``split``.
        n_folds: Folds of a cross-validation protocol.
        seed: Seed of the partition.

    Raises:
        ValueError: for an unknown protocol, or fewer than two folds' worth of groups or class members.
    """
    y = np.asarray(y)
    labelled = np.flatnonzero(y >= 0)
    if protocol == "split":
        return [Fold(seed, 0, labelled[~is_test[labelled]], labelled[is_test[labelled]])]
    if protocol not in PROTOCOLS:
        raise ValueError(f"eval.protocol={protocol!r}; choose one of {PROTOCOLS}")
    yl = y[labelled]
    if n_folds < 2 or np.bincount(yl).max(initial=0) < n_folds:
        raise ValueError(f"{n_folds}-fold cross-validation needs n_folds >= 2 and that many images of a class")
    if protocol == "grouped_cv":
        g = np.asarray(groups)[labelled]
        if len(np.unique(g)) < n_folds:
            raise ValueError(f"{n_folds}-fold grouped cross-validation needs at least {n_folds} groups")
        splits = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(labelled, yl, g)
    else:
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(labelled, yl)
    return [Fold(seed, i, np.sort(labelled[tr]), np.sort(labelled[te])) for i, (tr, te) in enumerate(splits)]
