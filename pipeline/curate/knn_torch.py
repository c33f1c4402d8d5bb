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

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

ArrayLike = np.ndarray | Tensor

log = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_tensor(x: ArrayLike) -> Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D [n, dim] array, got shape {tuple(t.shape)}")
    return t


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


def _fits_on_device(x: Tensor, device: torch.device, dtype: torch.dtype, fraction: float = 0.5) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return x.numel() * torch.finfo(dtype).bits // 8 <= fraction * free


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
        database: ``[nd, dim]``; kept on the device when it fits in half of the
            free memory, otherwise streamed chunk by chunk from the host.
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
    q_all, db = _as_tensor(queries), _as_tensor(database)
    if q_all.shape[1] != db.shape[1]:
        raise ValueError(f"queries have dim {q_all.shape[1]}, database has dim {db.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dev = torch.device(device) if device is not None else default_device()
    dtype = dtype or (torch.float16 if dev.type == "cuda" else torch.float32)
    low_precision = dtype in (torch.float16, torch.bfloat16)
    rerank = low_precision if rerank is None else rerank
    query_chunk = query_chunk or (8192 if dev.type == "cuda" else 1024)
    db_chunk = db_chunk or (131072 if dev.type == "cuda" else 16384)

    nq, nd = q_all.shape[0], db.shape[0]
    k_eff = min(k, nd)
    k_keep = min(nd, k_eff + rerank_margin) if rerank else k_eff
    db_dev = db.to(dev, dtype) if _fits_on_device(db, dev, dtype) else None
    if db_dev is None:
        # Every query chunk re-reads the whole pool over PCIe: use a large query_chunk, or IVF-PQ at this scale.
        log.warning("knn: database %s does not fit on %s; streaming it once per query chunk", tuple(db.shape), dev)
    sims_out = torch.full((nq, k), float("-inf"), dtype=torch.float32)
    idx_out = torch.full((nq, k), -1, dtype=torch.int64)

    starts = range(0, nq, query_chunk)
    for i0 in tqdm(starts, desc="knn", disable=not progress, total=len(starts)):
        q = q_all[i0 : i0 + query_chunk].to(dev, dtype, non_blocking=True)
        best_v = torch.full((q.shape[0], 0), float("-inf"), device=dev, dtype=dtype)
        best_i = torch.empty((q.shape[0], 0), device=dev, dtype=torch.int64)
        for j0 in range(0, nd, db_chunk):
            d = db_dev[j0 : j0 + db_chunk] if db_dev is not None else db[j0 : j0 + db_chunk].to(dev, dtype)
            v, i = chunk_topk(q @ d.T, k_keep)
            # Merge the chunk's best with the running best; ties keep the lower index first.
            best_v = torch.cat((best_v, v), dim=1)
            best_i = torch.cat((best_i, i + j0), dim=1)
            if best_v.shape[1] > k_keep:
                best_v, pos = best_v.topk(k_keep, dim=1)
                best_i = best_i.gather(1, pos)
        if rerank:
            qf = q_all[i0 : i0 + query_chunk].to(dev, torch.float32)
            src = db_dev if db_dev is not None else db
            cand = src[best_i.reshape(-1).to(src.device)].to(dev, torch.float32).view(*best_i.shape, -1)
            exact = torch.einsum("qd,qkd->qk", qf, cand)
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
