import numpy as np
import pytest

from pipeline.config.curate import IndexConfig
from pipeline.curate.knn_index import RowSubset, build_index, choose_factory, knn, search


def test_choose_factory_by_size():
    o = IndexConfig(flat_max=1000, ivf_flat_max=100_000)
    assert choose_factory(1000, 64, o) == "Flat"
    assert choose_factory(50_000, 64, o).startswith("IVF") and choose_factory(50_000, 64, o).endswith(",Flat")
    f = choose_factory(1_000_000, 384, o)
    assert f.startswith("IVF") and ",PQ96" in f
    assert choose_factory(10, 64, IndexConfig(kind="ivfpq", nlist=16, pq_m=7)) == "IVF16,PQ4"  # 7 -> divisor of 64
    with pytest.raises(ValueError, match="kind"):
        choose_factory(10, 8, IndexConfig(kind="hnsw"))


def _unit(n, d, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)


def test_flat_search_exact_and_batched():
    x = _unit(300, 16)
    sims, ids = knn(x, x[:50], 3, IndexConfig(batch_rows=7))
    assert (ids[:, 0] == np.arange(50)).all()
    exact = x[:50].astype(np.float32) @ x.astype(np.float32).T
    assert np.allclose(sims[:, 1], np.sort(exact, axis=1)[:, -2], atol=1e-3)


def test_ivf_on_memmap_matches_flat(tmp_path):
    x = _unit(2000, 16)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    idx = build_index(mm, IndexConfig(kind="ivf", nlist=16, nprobe=16, batch_rows=500))
    _, ids = search(idx, mm[:100], 5, batch_rows=33)
    _, exact = knn(x, x[:100], 5, IndexConfig(kind="flat"))
    assert (ids == exact).mean() > 0.99  # nprobe = nlist: exhaustive


def test_row_subset_reads_rows_lazily():
    x = _unit(10, 4)
    sub = RowSubset(x, np.array([7, 2, 5]))
    assert sub.shape == (3, 4)
    assert np.array_equal(sub[0:2], x[[7, 2]]) and np.array_equal(sub[np.array([2])], x[[5]])
    _, ids = knn(sub, x[[5]], 1, IndexConfig())
    assert ids[0, 0] == 2  # positions are within the subset


def test_torch_exact_kind_matches_flat():
    pytest.importorskip("pipeline.curate.knn_torch")
    x = _unit(200, 16)
    s1, i1 = knn(x, x[:20], 4, IndexConfig(kind="torch"))
    s2, i2 = knn(x, x[:20], 4, IndexConfig(kind="flat"))
    assert (i1 == i2).all() and np.allclose(s1, s2, atol=1e-3)
