import numpy as np
import torch
import torch.nn.functional as F

from pipeline.pretrain.knn_monitor import LabelledSet, knn_predict, knn_scores


def test_knn_separable_features_are_perfect_and_noise_is_chance() -> None:
    g = torch.Generator().manual_seed(0)
    n = 200
    y = np.arange(n) % 2
    centers = F.normalize(torch.randn(2, 16, generator=g), dim=1)
    feats = F.normalize(centers[y] + 0.05 * torch.randn(n, 16, generator=g), dim=1)
    train = np.arange(n) % 3 != 0
    data = LabelledSet(torch.zeros(n), train, {"a": y})
    assert knn_scores(feats, data, k=5)["a"] == 1.0
    noise = F.normalize(torch.randn(n, 16, generator=g), dim=1)
    assert 0.3 < knn_scores(noise, data, k=5)["a"] < 0.7


def test_knn_votes_weight_by_similarity() -> None:
    bank = F.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), dim=1)
    labels = torch.tensor([0, 0, 1])
    q = F.normalize(torch.tensor([[0.1, 1.0]]), dim=1)
    assert knn_predict(bank, labels, q, k=3).item() == 1  # one close neighbour beats two far ones
