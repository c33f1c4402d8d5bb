"""Chunked torch kNN against FAISS exact inner-product search."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch

from pipeline.curate.knn_torch import chunk_topk, knn


def _unit(n: int, dim: int, seed: int, dtype: str = "float32") -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def _faiss(q: np.ndarray, db: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(db.shape[1])
    index.add(db.astype(np.float32))
    return index.search(q.astype(np.float32), k)


def _assert_same_neighbours(
    s: np.ndarray, i: np.ndarray, s_ref: np.ndarray, i_ref: np.ndarray, tol: float = 1e-5
) -> None:
    np.testing.assert_allclose(s, s_ref, atol=tol)
    # Indices may differ only where two neighbours tie within float rounding.
    diff = i != i_ref
    assert diff.mean() < 0.01
    if diff.any():
        np.testing.assert_allclose(s[diff], s_ref[diff], atol=tol)


@pytest.mark.parametrize(("query_chunk", "db_chunk"), [(1024, 16384), (37, 101), (1, 7)])
def test_matches_faiss_flat_ip_for_any_chunking(query_chunk: int, db_chunk: int) -> None:
    db = _unit(3000, 48, 0)
    q = _unit(200, 48, 1)
    s, i = knn(q, db, 10, device="cpu", query_chunk=query_chunk, db_chunk=db_chunk)
    s_ref, i_ref = _faiss(q, db, 10)
    assert s.dtype == np.float32 and i.dtype == np.int64 and s.shape == (200, 10)
    _assert_same_neighbours(s, i, s_ref, i_ref)
    assert (np.diff(s, axis=1) <= 0).all()  # best first


@pytest.mark.parametrize("ties", [False, True])
def test_grouped_topk_equals_topk(ties: bool) -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 32 * 40, generator=g)
    if ties:  # few distinct values: many ties, including across groups
        scores = (scores * 2).round()
    v, i = chunk_topk(scores, 10, group=32)
    ref_v, _ = scores.topk(10, dim=1)
    torch.testing.assert_close(v, ref_v, atol=0, rtol=0)
    torch.testing.assert_close(scores.gather(1, i), v, atol=0, rtol=0)  # indices point at those values
    assert all(len(set(row.tolist())) == 10 for row in i)  # no element twice


def test_self_search_finds_itself_first() -> None:
    db = _unit(1000, 32, 2)
    s, i = knn(db, db, 3, device="cpu", db_chunk=128)
    np.testing.assert_array_equal(i[:, 0], np.arange(1000))
    np.testing.assert_allclose(s[:, 0], 1.0, atol=1e-5)


def test_fp16_with_rerank_equals_fp32_exact() -> None:
    # Embeddings stored in fp16 (as the pipeline keeps them): the low-precision
    # scores only pick candidates, the fp32 re-score restores exact order.
    db = _unit(4000, 64, 3, "float16")
    q = db[:300]
    s_ref, i_ref = _faiss(q, db, 10)
    s, i = knn(q, db, 10, device="cpu", dtype=torch.float16, db_chunk=1000)
    _assert_same_neighbours(s, i, s_ref, i_ref)
    # Without the re-score the fp16 ranking does swap near-ties.
    _s2, i2 = knn(q, db, 10, device="cpu", dtype=torch.float16, rerank=False, db_chunk=1000)
    assert (i2 == i_ref).mean() > 0.9


def test_memmap_fp16_pool_and_fp32_rescore_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A memory-mapped fp16 pool (as the embed step stores it) is read by chunks; fp32 queries
    # against it in fp16 re-score against the fp16 values, which are the pool's own.
    db = _unit(3000, 32, 6, "float16")
    mm = np.lib.format.open_memmap(tmp_path / "emb.npy", mode="w+", dtype=np.float16, shape=db.shape)
    mm[:] = db
    mm.flush()
    pool = np.load(tmp_path / "emb.npy", mmap_mode="r")
    q = _unit(50, 32, 7)
    s_ref, i_ref = _faiss(q, db, 5)
    for dtype in (torch.float32, torch.float16):
        s, i = knn(q, pool, 5, device="cpu", dtype=dtype, db_chunk=512)
        _assert_same_neighbours(s, i, s_ref, i_ref, tol=1e-4)


def test_torch_in_torch_out_and_k_larger_than_database() -> None:
    db = torch.from_numpy(_unit(5, 8, 4))
    s, i = knn(db[:2], db, 7, device="cpu")
    assert isinstance(s, torch.Tensor) and isinstance(i, torch.Tensor)
    assert (i[:, 5:] == -1).all() and torch.isinf(s[:, 5:]).all()
    assert sorted(i[0, :5].tolist()) == [0, 1, 2, 3, 4]


def test_rejects_mismatched_dims() -> None:
    with pytest.raises(ValueError, match="dim"):
        knn(_unit(3, 8, 0), _unit(3, 9, 0), 1, device="cpu")


@pytest.mark.gpu
def test_gpu_fp16_matches_faiss() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    db = _unit(20000, 384, 5, "float16")
    q = db[:1000]
    s_ref, i_ref = _faiss(q, db, 10)
    s, i = knn(q, db, 10, device="cuda")
    _assert_same_neighbours(s, i, s_ref, i_ref, tol=1e-4)
