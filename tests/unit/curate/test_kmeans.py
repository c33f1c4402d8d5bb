import numpy as np

from pipeline.curate.kmeans import Hierarchy, allot, assign, balanced_sample, fit_kmeans, hierarchical_kmeans


def test_allot_water_filling():
    assert allot(np.array([1, 10, 10]), 9).tolist() == [1, 4, 4]
    assert allot(np.array([2, 2]), 10).tolist() == [2, 2]
    assert allot(np.array([5, 5, 5]), 0).tolist() == [0, 0, 0]
    assert allot(np.array([3, 3, 3]), 7).sum() == 7


def _blobs(sizes, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), d))
    x = np.concatenate([c + 0.05 * rng.normal(size=(n, d)) for c, n in zip(centers, sizes)])
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


def test_kmeans_recovers_blobs():
    x, truth = _blobs([50, 50, 50])
    lab, sim = assign(x, fit_kmeans(x, 3, seed=0))
    for t in range(3):
        assert len(set(lab[truth == t].tolist())) == 1
    assert sim.min() > 0.9


def test_balanced_sample_flattens_imbalance():
    # Item clusters 0..3 of sizes 400, 20, 20, 20: flat sampling of 60 would take ~50 from cluster 0.
    labels0 = np.repeat(np.arange(4), [400, 20, 20, 20])
    h = Hierarchy(labels=[labels0, np.array([0, 1, 1, 1])], item_sim=np.ones(460, np.float32))
    picked = balanced_sample(h, 60, seed=0)
    counts = np.bincount(labels0[picked], minlength=4)
    assert len(picked) == 60 == len(set(picked.tolist()))
    assert counts[0] == 30  # top level: two clusters, 30 each
    assert counts[1:].tolist() == [10, 10, 10]


def test_hierarchical_kmeans_levels_and_sampling():
    x, truth = _blobs([300, 30, 30, 30], seed=1)
    h = hierarchical_kmeans(x, [8, 4], niter=10, seed=0)
    assert len(h.labels) == 2 and h.labels[0].shape == (390,) and h.labels[1].shape == (8,)
    picked = balanced_sample(h, 80, seed=0)
    share_big = (truth[picked] == 0).mean()
    assert share_big < 300 / 390  # balanced sampling shrinks the dominant blob's share
