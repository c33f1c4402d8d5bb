"""Exact k-nearest-neighbour search by chunked matrix products in torch.

On a GPU without faiss-gpu (the H100 images we run on have no faiss-gpu
wheel), exact search is a tensor-core matmul: for 1M x 1M x 384 that is
~7.7e14 FLOP, about a second of fp16 tensor-core time. Queries and database
are split into chunks, each chunk pair gives a ``[q, d]`` score block, and a
running top-k keeps the best ``k`` per query, so memory is bounded by the
chunk sizes, not by ``N^2``.

Low-precision scores (fp16/bf16, the fast path on GPU) can swap neighbours
whose similarities differ by less than the rounding step, so by default the
search keeps ``k + rerank_margin`` candidates and re-scores them in fp32 on the
original vectors: the result then equals fp32 exact search unless a true
neighbour falls more than ``rerank_margin`` places in the low-precision ranking.

Scores are inner products (cosine on L2-normalised vectors), the same as
FAISS ``IndexFlatIP``; results are ``(similarities, indices)`` like FAISS,
numpy in -> numpy out, torch in -> torch out. Missing neighbours (``k`` larger
than the database) are ``-1`` with similarity ``-inf``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

ArrayLike = np.ndarray | Tensor

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _from_numpy(a: np.ndarray) -> Tensor:
    with warnings.catch_warnings():  # read-only memmaps: the tensors are only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(a)


class _Rows:
    """Row access to a numpy array (memory-mapped ones too) or a tensor without copying all of it."""

    def __init__(self, x: ArrayLike) -> None:
        if x.ndim != 2:
            raise ValueError(f"expected a 2-D [n, dim] array, got shape {tuple(x.shape)}")
        self.x, self.shape = x, tuple(x.shape)
        self.is_numpy = isinstance(x, np.ndarray)
        self.dtype = _from_numpy(np.empty(0, x.dtype)).dtype if isinstance(x, np.ndarray) else x.dtype

    def rows(self, start: int, stop: int) -> Tensor:
        if isinstance(self.x, np.ndarray):
            return _from_numpy(np.ascontiguousarray(self.x[start:stop]))
        return self.x[start:stop]

    def take(self, idx: Tensor) -> Tensor:
        """Rows ``idx`` (any shape) as ``[*idx.shape, dim]``."""
        flat = idx.reshape(-1)
        out = (
            _from_numpy(np.asarray(self.x[flat.cpu().numpy()]))
            if isinstance(self.x, np.ndarray)
            else self.x[flat.to(self.x.device)]
        )
        return out.view(*idx.shape, self.shape[1])


def _resident(db: _Rows, dev: torch.device, dtype: torch.dtype, chunk: int) -> Tensor | None:
    """The pool in ``dtype`` on ``dev`` when that is cheap or fits; ``None`` means stream it per chunk."""
    if isinstance(db.x, Tensor) and db.x.device == dev and db.dtype == dtype:
        return db.x  # already there, no second copy
    nbytes = db.shape[0] * db.shape[1] * torch.finfo(dtype).bits // 8
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        if nbytes > 0.5 * free:
            log.warning(
                "knn: database %s does not fit on %s; streaming it once per query chunk "
                "(use a large query_chunk, or IVF-PQ at this scale)",
                db.shape,
                dev,
            )
            return None
        out = torch.empty(db.shape, dtype=dtype, device=dev)
        for j in range(0, db.shape[0], chunk):  # fill by chunks: no full host copy of a memmap
            out[j : j + chunk] = db.rows(j, j + chunk).to(dev, dtype, non_blocking=True)
        return out
    if db.dtype == dtype and isinstance(db.x, np.ndarray):
        return _from_numpy(db.x)  # no copy; a memmap is paged in as it is read
    return None  # convert each chunk as it is used: memory stays bounded by the chunk


def chunk_topk(scores: Tensor, k: int, group: int = 32) -> tuple[Tensor, Tensor]:
    """Row-wise top-``k`` of a score block, via group maxima when the rows are long.

    ``torch.topk`` over a long row costs several passes over it; on a GPU that
    is ~10x the matmul that produced the block. Instead take the max of each run
    of ``group`` columns (one memory-bound pass), pick the ``k`` best groups, and
    take the top-``k`` among their ``k * group`` members. Exact: a top-``k``
    element outside the ``k`` best groups would be beaten by those groups' ``k``
    maxima, so it would not be in the top ``k`` (ties may swap equal values).
    """
    q, n = scores.shape
    if group <= 1 or n % group or n < 4 * k * group:
        return scores.topk(min(k, n), dim=1)
    g = scores.view(q, n // group, group)
    _, gidx = g.amax(dim=2).topk(k, dim=1)  # [q, k] best groups
    members = g.gather(1, gidx[:, :, None].expand(-1, -1, group)).reshape(q, k * group)
    v, pos = members.topk(k, dim=1)
    idx = gidx.gather(1, pos // group) * group + pos % group
    return v, idx


@torch.no_grad()
def knn(
    queries: ArrayLike,
    database: ArrayLike,
    k: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    query_chunk: int | None = None,
    db_chunk: int | None = None,
    rerank: bool | None = None,
    rerank_margin: int = 16,
    progress: bool = False,
) -> tuple[ArrayLike, ArrayLike]:
    """The ``k`` database rows with the largest inner product with each query.

    Args:
        queries: ``[nq, dim]`` (numpy or torch, any float dtype).
        database: ``[nd, dim]``, numpy (memory-mapped is fine) or torch; copied to
            the device by chunks when it fits in half of the free memory, else
            streamed chunk by chunk from the host.
        k: Neighbours per query.
        device: Where to compute; CUDA when available.
        dtype: Matmul dtype; fp16 on CUDA, fp32 on CPU by default.
        query_chunk, db_chunk: Block sizes; the score block is
            ``query_chunk x db_chunk`` elements.
        rerank: Re-score candidates in fp32; default on for fp16/bf16.
        rerank_margin: Extra candidates kept for the re-scoring.
        progress: Show a progress bar over query chunks.

    Returns:
        ``(similarities [nq, k] float32, indices [nq, k] int64)``, best first.
    """
    as_numpy = isinstance(queries, np.ndarray)
    qs, db = _Rows(queries), _Rows(database)
    if qs.shape[1] != db.shape[1]:
        raise ValueError(f"queries have dim {qs.shape[1]}, database has dim {db.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dev = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    low_precision = dtype in (torch.float16, torch.bfloat16)
    rerank = low_precision if rerank is None else rerank
    query_chunk = query_chunk or (8192 if dev.type == "cuda" else 1024)
    db_chunk = db_chunk or (131072 if dev.type == "cuda" else 16384)

    nq, nd = qs.shape[0], db.shape[0]
    k_eff = min(k, nd)
    k_keep = min(nd, k_eff + rerank_margin) if rerank else k_eff
    db_dev = _resident(db, dev, dtype, db_chunk)
    # Re-score against the pool in its own precision: the device copy only when it holds the same values.
    rescore_src = db_dev if db_dev is not None and db.dtype == dtype else None
    sims_out = torch.full((nq, k), float("-inf"), dtype=torch.float32)
    idx_out = torch.full((nq, k), -1, dtype=torch.int64)

    starts = range(0, nq, query_chunk)
    for i0 in tqdm(starts, desc="knn", disable=not progress, total=len(starts)):
        q_host = qs.rows(i0, i0 + query_chunk)
        q = q_host.to(dev, dtype, non_blocking=True)
        best_v = torch.full((q.shape[0], 0), float("-inf"), device=dev, dtype=dtype)
        best_i = torch.empty((q.shape[0], 0), device=dev, dtype=torch.int64)
        for j0 in range(0, nd, db_chunk):
            d = db_dev[j0 : j0 + db_chunk] if db_dev is not None else db.rows(j0, j0 + db_chunk).to(dev, dtype)
            v, i = chunk_topk(q @ d.T, k_keep)
            # Merge the chunk's best into the running best.
            best_v = torch.cat((best_v, v), dim=1)
            best_i = torch.cat((best_i, i + j0), dim=1)
            if best_v.shape[1] > k_keep:
                best_v, pos = best_v.topk(k_keep, dim=1)
                best_i = best_i.gather(1, pos)
        if rerank:
            qf = q_host.to(dev, torch.float32)
            if rescore_src is not None:
                cand = rescore_src[best_i.reshape(-1)].view(*best_i.shape, -1)
            else:
                cand = db.take(best_i)
            exact = torch.einsum("qd,qkd->qk", qf, cand.to(dev, torch.float32))
            best_v, pos = exact.topk(k_eff, dim=1)
            best_i = best_i.gather(1, pos)
        else:
            best_v, pos = best_v.float().topk(k_eff, dim=1)
            best_i = best_i.gather(1, pos)
        sims_out[i0 : i0 + q.shape[0], :k_eff] = best_v.float().cpu()
        idx_out[i0 : i0 + q.shape[0], :k_eff] = best_i.cpu()

    if as_numpy:
        return sims_out.numpy(), idx_out.numpy()
    return sims_out, idx_out
