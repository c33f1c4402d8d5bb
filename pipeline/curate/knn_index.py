"""FAISS indexes chosen by size, built and searched in bounded memory.

Vectors are L2-normalised, so inner product is cosine similarity. The index
type follows the pool size (see ``docs/curation.md`` for the arithmetic):

* up to ``flat_max`` vectors: exact ``IndexFlatIP``;
* up to ``ivf_flat_max``: ``IVF<nlist>,Flat`` (exact distances, approximate lists);
* beyond: ``IVF<nlist>,PQ<m>`` (vectors compressed to ``m`` bytes).

Inputs may be memory-mapped float16 matrices; they are read and converted in
row batches, so memory is the index plus one batch, never the whole matrix.
"""

from __future__ import annotations

import contextlib
import logging
import math

import faiss
import numpy as np
from tqdm.auto import tqdm

from pipeline.config.curate import IndexConfig

log = logging.getLogger(__name__)


def choose_factory(n: int, d: int, opts: IndexConfig) -> str:
    """The FAISS factory string for ``n`` vectors of ``d`` dims."""
    kind = opts.kind
    if kind == "auto":
        kind = "flat" if n <= opts.flat_max else ("ivf" if n <= opts.ivf_flat_max else "ivfpq")
    if kind == "flat":
        return "Flat"
    if kind == "torch":
        return "TorchExact"
    nlist = opts.nlist or max(16, min(65_536, 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))))
    if kind == "ivf":
        return f"IVF{nlist},Flat"
    if kind == "ivfpq":
        m = opts.pq_m or max(1, d // 4)
        while d % m:
            m -= 1
        return f"IVF{nlist},PQ{m}"
    raise ValueError(f"curate index kind {kind!r}: use auto, flat, ivf, ivfpq or torch")


def _rows(x: np.ndarray | RowSubset, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(x[start:stop], dtype=np.float32)


def _gpu_wanted(use_gpu: str) -> bool:
    if use_gpu == "no":
        return False
    n = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if use_gpu == "yes" and n == 0:
        raise RuntimeError("curate.index.use_gpu=yes but faiss sees no GPU (install faiss-gpu)")
    return n > 0


def build_index(x: np.ndarray | RowSubset, opts: IndexConfig, progress: bool = False, seed: int = 0) -> faiss.Index:
    """Build and fill an inner-product index over the rows of ``x`` (may be a memmap).

    ``seed`` draws the IVF/PQ training sample.
    """
    n, d = x.shape
    factory = choose_factory(n, d, opts)
    if factory == "TorchExact":
        return TorchExactIndex(x, progress)  # type: ignore[return-value]
    index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
    if _gpu_wanted(opts.use_gpu):
        index = faiss.index_cpu_to_all_gpus(index)
    if not index.is_trained:
        rng = np.random.default_rng(seed)
        take = np.sort(rng.choice(n, size=min(n, opts.train_size), replace=False))
        index.train(np.ascontiguousarray(x[take], dtype=np.float32))
    for s in tqdm(range(0, n, opts.batch_rows), desc=f"index {factory}", disable=not progress, leave=False):
        index.add(_rows(x, s, min(n, s + opts.batch_rows)))
    set_nprobe(index, opts.nprobe)
    log.info("built %s over %d x %d vectors", factory, n, d)
    return index


def set_nprobe(index: faiss.Index, nprobe: int) -> None:
    with contextlib.suppress(RuntimeError):  # flat indexes have no nprobe
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)


def search(
    index: faiss.Index, q: np.ndarray, k: int, batch_rows: int = 65_536, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` nearest rows of the index for every row of ``q``, in query batches.

    Returns:
        ``(sims, ids)``: float32 and int64 arrays of shape ``(len(q), k)``;
        missing neighbours have id ``-1`` and similarity ``-inf``.
    """
    n = q.shape[0]
    k = max(1, min(k, index.ntotal))
    sims = np.empty((n, k), np.float32)
    ids = np.empty((n, k), np.int64)
    for s in tqdm(range(0, n, batch_rows), desc="search", disable=not progress, leave=False):
        e = min(n, s + batch_rows)
        sims[s:e], ids[s:e] = index.search(_rows(q, s, e), k)
    sims[ids < 0] = -np.inf
    return sims, ids


def knn(
    base: np.ndarray | RowSubset, queries: np.ndarray, k: int, opts: IndexConfig, progress: bool = False, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Build an index over ``base`` and search ``queries`` in it."""
    return search(build_index(base, opts, progress, seed), queries, k, opts.batch_rows, progress)


class RowSubset:
    """Rows ``idx`` of a (memory-mapped) matrix, read lazily: slices and index arrays only."""

    def __init__(self, x: np.ndarray, idx: np.ndarray) -> None:
        self.x, self.idx = x, np.asarray(idx, np.int64)
        self.shape = (len(self.idx), x.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray) -> np.ndarray:
        return np.asarray(self.x[self.idx[key]])


class TorchExactIndex:
    """The slice of the FAISS index API the curate steps use, over ``knn_torch.knn`` (exact, chunked)."""

    is_trained = True

    def __init__(self, x: np.ndarray | RowSubset, progress: bool = False) -> None:
        from pipeline.curate import knn_torch  # noqa: F401 - fails early, naming the module, when absent

        self.db = x if isinstance(x, np.ndarray) else np.asarray(x[0 : x.shape[0]])
        self.ntotal = self.db.shape[0]
        self.progress = progress

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        from pipeline.curate.knn_torch import knn as torch_knn

        sims, ids = torch_knn(np.asarray(q), self.db, k, progress=self.progress)
        return np.asarray(sims, np.float32), np.asarray(ids, np.int64)
