import numpy as np

from pipeline.curate.dedup import UnionFind, components, dedup, edges_from_knn, pick_keepers


def test_union_find_merges_chains():
    uf = UnionFind(6)
    assert uf.union(0, 1) and uf.union(1, 2)
    assert not uf.union(0, 2)  # already joined
    uf.union(4, 5)
    lab = uf.labels()
    assert lab[0] == lab[1] == lab[2]
    assert lab[4] == lab[5] != lab[0]
    assert lab[3] not in (lab[0], lab[4])


def test_edges_threshold_self_and_duplicates():
    # item 0's neighbours: itself, 1 (0.99), 2 (0.5); item 1: itself, 0 (0.99)
    sims = np.array([[1.0, 0.99, 0.5], [1.0, 0.99, -np.inf], [1.0, 0.5, 0.2]], np.float32)
    ids = np.array([[0, 1, 2], [1, 0, -1], [2, 0, 1]])
    i, j, s = edges_from_knn(sims, ids, 0.9)
    assert i.tolist() == [0] and j.tolist() == [1]  # self-edges, -1 and the repeat 1->0 dropped
    assert s[0] == np.float32(0.99)
    i, j, _ = edges_from_knn(sims, ids, 0.4)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 2)]


def test_edges_with_crop_rows_map_to_items():
    # 2 items x 2 crops: index rows 0,1 -> item 0; rows 2,3 -> item 1
    sims = np.array([[1.0, 0.995], [1.0, 0.97]], np.float32)
    ids = np.array([[0, 3], [2, 1]])
    i, j, s = edges_from_knn(sims, ids, 0.96, rows_per_item=2)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1)]
    assert abs(float(s[0]) - 0.995) < 1e-6  # the best of the two matches


def test_components_transitive():
    lab = components(5, np.array([0, 1]), np.array([1, 2]))
    assert len(set(lab[:3].tolist())) == 1 and lab[3] != lab[4]


def test_keeper_policy_largest_then_smallest_id():
    lab = np.array([0, 0, 0, 3])
    keep = pick_keepers(lab, pixels=[100, 400, 400, 9], ids=["c", "b", "a", "d"])
    assert keep == {0: 2}  # 400 px ties -> id "a"


def test_dedup_records_every_removal_with_link():
    # 0-1 (0.99), 1-2 (0.98): chain; 2 is largest so 0 and 1 go; 0 is linked to 2 only through 1
    i, j, s = np.array([0, 1]), np.array([1, 2]), np.array([0.99, 0.98], np.float32)
    removals, labels = dedup(4, i, j, s, pixels=[10, 10, 50, 10], ids=["a", "b", "c", "d"])
    by = {r.removed: r for r in removals}
    assert set(by) == {0, 1}
    assert by[1].kept == 2 and by[1].linked_to == 2 and abs(by[1].similarity - 0.98) < 1e-6
    assert by[0].kept == 2 and by[0].linked_to == 1 and abs(by[0].similarity - 0.99) < 1e-6
    assert labels[3] != labels[0]


def test_scipy_components_match_union_find():
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, 200, 150), rng.integers(0, 200, 150)
    uf = UnionFind(200)
    for a, b in zip(i.tolist(), j.tolist()):
        uf.union(a, b)
    ref, got = uf.labels(), components(200, i, j)
    # same partition: labels map one-to-one
    pairs = set(zip(ref.tolist(), got.tolist()))
    assert len(pairs) == len(set(ref.tolist())) == len(set(got.tolist()))


def test_edges_batched_equals_one_shot():
    from pipeline.config.curate import IndexConfig
    from pipeline.curate.dedup import edges_batched
    from pipeline.curate.knn_index import build_index, search

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x[150:200] = x[:50] + 0.01 * rng.normal(size=(50, 8))  # 50 planted duplicates
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = build_index(x, IndexConfig())
    i1, j1, s1 = edges_from_knn(*search(idx, x, 5), 0.99)
    i2, j2, s2, nn1 = edges_batched(idx.search, x, 5, 0.99, batch_rows=37)
    assert i1.tolist() == i2.tolist() and j1.tolist() == j2.tolist() and np.allclose(s1, s2)
    assert {(a, b) for a, b in zip(i2.tolist(), j2.tolist())} >= {(a, a + 150) for a in range(50)}
    assert (nn1[150:200] > 0.99).all() and nn1.shape == (300,)
