import math

import numpy as np
import pytest
import torch

from pipeline.evaluation.knn import knn_classify


def _dino_knn(train, train_labels, test, k, T, num_classes):
    """DINO's eval_knn.knn_classifier, copied (one batch, CPU), as the reference."""
    train_features = torch.nn.functional.normalize(torch.as_tensor(train, dtype=torch.float64), dim=1).t()
    features = torch.nn.functional.normalize(torch.as_tensor(test, dtype=torch.float64), dim=1)
    train_labels = torch.as_tensor(train_labels)
    batch_size = features.shape[0]
    retrieval_one_hot = torch.zeros(k, num_classes, dtype=torch.float64)
    similarity = torch.mm(features, train_features)
    distances, indices = similarity.topk(k, largest=True, sorted=True)
    candidates = train_labels.view(1, -1).expand(batch_size, -1)
    retrieved_neighbors = torch.gather(candidates, 1, indices)
    retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
    retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
    distances_transform = distances.clone().div_(T).exp_()
    probs = torch.sum(
        torch.mul(retrieval_one_hot.view(batch_size, -1, num_classes), distances_transform.view(batch_size, -1, 1)), 1
    )
    _, predictions = probs.sort(1, True)
    return predictions[:, 0].numpy(), probs.numpy()


def test_hand_computed_tiny_example() -> None:
    # Unit vectors at angles 0, 60 and 90 degrees; the query sits at 30 degrees.
    train = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2], [0.0, 1.0]])
    labels = np.array([0, 1, 1])
    query = np.array([[math.sqrt(3) / 2, 0.5]])
    T = 0.5
    pred, proba = knn_classify(train, labels, query, num_classes=2, k=3, temperature=T)
    # cos to the three: cos30, cos30, cos60. Class 0 gets e^(cos30/T); class 1 e^(cos30/T) + e^(cos60/T).
    w0 = math.exp(math.cos(math.radians(30)) / T)
    w1 = math.exp(math.cos(math.radians(30)) / T) + math.exp(0.5 / T)
    assert pred.tolist() == [1]
    assert proba[0] == pytest.approx([w0 / (w0 + w1), w1 / (w0 + w1)])
    # With k=2 the far neighbour drops out: the two nearest tie, and ties go to the lower class id.
    _pred2, proba2 = knn_classify(train, labels, query, num_classes=2, k=2, temperature=T)
    assert proba2[0] == pytest.approx([0.5, 0.5])


def test_matches_dino_reference_and_ignores_feature_scale() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 16))
    labels = rng.integers(0, 3, size=60)
    test = rng.normal(size=(25, 16))
    ref_pred, ref_votes = _dino_knn(train, labels, test, k=10, T=0.07, num_classes=3)
    pred, proba = knn_classify(train * 7.0, labels, test, num_classes=3, k=10, temperature=0.07, batch_size=8)
    np.testing.assert_array_equal(pred, ref_pred)
    np.testing.assert_allclose(proba, ref_votes / ref_votes.sum(1, keepdims=True), rtol=1e-5)


def test_k_larger_than_train_set_is_clipped() -> None:
    train = np.eye(3)
    pred, proba = knn_classify(train, np.array([0, 1, 1]), np.array([[1.0, 0.0, 0.0]]), num_classes=2, k=20)
    assert proba.shape == (1, 2)
    assert pred.tolist() == [0]  # weight e^(1/0.07) for class 0 dwarfs 2 * e^0


def test_centring_equals_dino_on_centred_features() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal(size=(40, 8)) + 5.0  # a large common offset, as features of one domain have
    labels = rng.integers(0, 2, size=40)
    test = rng.normal(size=(10, 8)) + 5.0
    mean = train.mean(0)
    ref_pred, ref_votes = _dino_knn(train - mean, labels, test - mean, k=7, T=0.07, num_classes=2)
    pred, proba = knn_classify(train, labels, test, 2, k=7, temperature=0.07, centre=True)
    np.testing.assert_array_equal(pred, ref_pred)
    np.testing.assert_allclose(proba, ref_votes / ref_votes.sum(1, keepdims=True), rtol=1e-5)


def test_prior_correction_divides_votes_by_class_share() -> None:
    # Bank: three of class 0, one of class 1; the query is equally similar to all four (k=4).
    train = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = np.array([0, 0, 0, 1])
    query = np.array([[1.0, 0.0]])
    pred, proba = knn_classify(train, labels, query, 2, k=4)
    assert pred.tolist() == [0] and proba[0] == pytest.approx([0.75, 0.25])
    # Votes 3w and w over shares 3/4 and 1/4: the classes tie.
    _, corrected = knn_classify(train, labels, query, 2, k=4, prior_correction=True)
    assert corrected[0] == pytest.approx([0.5, 0.5])
