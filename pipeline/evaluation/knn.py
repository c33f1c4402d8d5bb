"""Weighted k-nearest-neighbour classification on frozen features, as in DINO.

Port of ``knn_classifier`` from ``facebookresearch/dino/eval_knn.py``: features
are L2-normalised, the ``k`` most cosine-similar training samples vote for their
class with weight ``exp(similarity / T)``, and the class with most weight wins.

Two options the eval stage turns on (both off here, which is DINO's classifier):
``centre`` subtracts the labelled bank's mean before normalising (features of one
domain share a large common offset, which otherwise dominates every cosine), and
``prior_correction`` divides each class's votes by its share of the bank, so an
imbalanced bank does not vote for its majority class by default.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def knn_classify(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    num_classes: int,
    k: int = 20,
    temperature: float = 0.07,
    batch_size: int = 1024,
    centre: bool = False,
    prior_correction: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Predict test classes by temperature-weighted voting of the ``k`` nearest training samples.

    Args:
        train_features: ``(n_train, d)``; need not be normalised.
        train_labels: ``(n_train,)`` class ids.
        test_features: ``(n_test, d)``.
        num_classes: Number of classes.
        k: Neighbours; clipped to ``n_train`` (few-label subsets can be smaller than ``k``).
        temperature: ``T`` of the vote weights ``exp(cos / T)`` (DINO uses 0.07).
        batch_size: Test rows per similarity block (bounds memory).
        centre: Subtract the mean of ``train_features`` from both sides before normalising.
        prior_correction: Divide the votes for each class by its share of ``train_labels``.

    Returns:
        ``(predictions (n_test,), class probabilities (n_test, num_classes))``; the
        probabilities are the normalised vote weights.
    """
    train = torch.as_tensor(np.asarray(train_features), dtype=torch.float64)
    test = torch.as_tensor(np.asarray(test_features), dtype=torch.float64)
    if centre:
        mean = train.mean(dim=0, keepdim=True)
        train, test = train - mean, test - mean
    # Similarities in float32 (half the memory traffic of the many folds' searches); votes in float64.
    train, test = F.normalize(train, dim=1).float(), F.normalize(test, dim=1).float()
    labels = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    k = min(k, train.shape[0])
    votes = []
    for start in range(0, test.shape[0], batch_size):
        sim = test[start : start + batch_size] @ train.T
        top_sim, top_idx = sim.topk(k, dim=1, largest=True, sorted=True)
        top_sim = top_sim.double()
        one_hot = F.one_hot(labels[top_idx], num_classes).to(top_sim.dtype)  # (b, k, C)
        # exp(sim/T) is at most e^(1/0.07) ~ 1.6e6 in float64: no overflow, and the
        # normalised votes below are the same as DINO's unnormalised ones.
        weights = (top_sim / temperature).exp().unsqueeze(-1)
        votes.append((one_hot * weights).sum(dim=1))
    v = torch.cat(votes) if votes else torch.zeros(0, num_classes, dtype=torch.float64)
    if prior_correction:
        # A class absent from the bank gets no votes either way; clamp keeps 0/0 out.
        prior = torch.bincount(labels, minlength=num_classes).to(v.dtype) / len(labels)
        v = v / prior.clamp_min(1e-12)
    proba = v / v.sum(dim=1, keepdim=True).clamp_min(1e-300)
    return v.argmax(dim=1).numpy(), proba.numpy()
