import numpy as np

from pipeline.curate.retrieval import cluster_retrieve, knn_retrieve


def test_knn_retrieve_counts_collisions_and_keeps_best_seed():
    sims = np.array([[0.9, 0.8], [0.95, 0.7], [0.6, 0.5]], np.float32)
    ids = np.array([[10, 11], [10, 12], [13, -1]])
    r = knn_retrieve(sims, ids)
    assert r.items.tolist() == [10, 11, 12, 13]
    assert r.source.tolist() == [1, 0, 1, 2]  # item 10: seed 1 (0.95) beats seed 0 (0.9)
    assert r.stats["collisions"] == 1 and r.stats["pairs"] == 5 and r.stats["max_hits"] == 2


def test_knn_retrieve_mask_and_min_similarity():
    sims = np.array([[0.9, 0.4]], np.float32)
    ids = np.array([[0, 1]])
    allowed = np.array([False, True])
    assert knn_retrieve(sims, ids, allowed).items.tolist() == [1]
    assert knn_retrieve(sims, ids, min_similarity=0.5).items.tolist() == [0]


def test_cluster_retrieve_takes_seed_clusters_only():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    sim = np.linspace(0.5, 0.9, 7).astype(np.float32)
    r = cluster_retrieve(labels, sim, seed_labels=np.array([2, 0, 2]))
    assert r.items.tolist() == [0, 1, 4, 5, 6]
    assert r.hits.tolist() == [1, 1, 2, 2, 2]
    assert r.stats["seed_clusters"] == 2 and r.stats["seeds_sharing_a_cluster"] == 1
    r = cluster_retrieve(labels, sim, np.array([2]), per_cluster=2, seed=0)
    assert len(r.items) == 2 and set(r.items.tolist()) <= {4, 5, 6}
