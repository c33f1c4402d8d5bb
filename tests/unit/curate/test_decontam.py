import numpy as np
import pytest

from pipeline.curate.decontam import best_match, find_contaminated


def test_find_contaminated_best_match_per_item_with_crops():
    # 2 pool items x 2 query rows; eval index: 3 items x 2 rows
    sims = np.array([[0.99, 0.5], [0.96, 0.1], [0.2, 0.1], [0.3, 0.2]], np.float32)
    ids = np.array([[4, 0], [1, 2], [0, 1], [5, 2]])
    found = find_contaminated(sims, ids, 0.95, query_rows_per_item=2, index_rows_per_item=2)
    assert [(c.pool, c.eval) for c in found] == [(0, 2)]
    assert abs(found[0].similarity - 0.99) < 1e-6
    assert np.allclose(best_match(sims, ids, 2), [0.99, 0.3])


def test_candidate_pairs_keep_every_pair_and_best_per_pool():
    from pipeline.curate.decontam import best_per_pool, candidate_pairs

    # 2 pool items x 2 crops (query rows 0,1 -> item 0; 2,3 -> item 1); eval items 1 row each
    sims = np.array([[0.99, 0.98], [0.985, 0.5], [0.97, 0.2], [0.1, 0.0]], np.float32)
    ids = np.array([[0, 1], [0, 2], [2, -1], [1, 0]])
    c = candidate_pairs(sims, ids, 0.975, query_rows_per_item=2)
    assert [(x.pool, x.eval) for x in c] == [(0, 0), (0, 1)]
    assert c[0].similarity == pytest.approx(0.99)
    assert [(x.pool, x.eval) for x in best_per_pool(c)] == [(0, 0)]
    assert candidate_pairs(sims, ids, 0.999) == []
