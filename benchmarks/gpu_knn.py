"""Similarity search for dedup/retrieval: torch exact chunked kNN vs faiss-cpu, same run, same data.

Synthetic clustered 384-d fp16 embeddings with planted near-duplicates. For
each size: all-vs-all kNN (every vector queries the pool, as dedup does) with

* ``torch_exact``: :func:`pipeline.curate.knn_torch.knn` on the device (fp16
  tensor-core scores + fp32 re-score on GPU; fp32 on CPU);
* ``faiss_flat``: faiss-cpu ``IndexFlatIP`` (exact; also the reference);
* ``faiss_ivf_flat`` / ``faiss_ivf_pq``: faiss-cpu IVF (``nlist = 4 sqrt(N)``).

Recall@k is measured on a query sample against exact fp32 search and is
tie-aware (a neighbour whose similarity equals the k-th true one counts).
Duplicate recall: share of planted copies found among a source's neighbours
above the similarity threshold. faiss methods whose full all-vs-all run is too
slow for the machine are timed on the sample and extrapolated linearly in the
number of queries (marked ``extrapolated``). The crossover arithmetic between
exact search (O(N^2 d)) and IVF-PQ (about O(N^1.5)) is printed and saved.

    python benchmarks/gpu_knn.py --sizes 1000000,10000000          # H100 (IVF only up to --ivf-max)
    nice -n 10 python benchmarks/gpu_knn.py --small --threads 2      # CPU, 20k
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import faiss
import numpy as np
import torch
from gpu_common import parse_args, resolve_device, sync, write_results  # importing it puts the repo on sys.path

from pipeline.curate.knn_torch import knn


def make_embeddings(
    n: int,
    dim: int,
    seed: int,
    device: torch.device,
    dup_frac: float = 0.01,
    spread: float = 0.8,
    latent: int = 32,
    noise: float = 0.2,
    dup_noise: float = 0.1,
    chunk: int = 1 << 20,
) -> tuple[torch.Tensor, np.ndarray]:
    """Unit vectors around ``n/1000`` cluster centres in fp16, with planted near-copies.

    A point is its centre plus a ``latent``-dimensional offset (norm ~``spread``,
    in a subspace shared by all clusters) plus isotropic noise (norm ~``noise``):
    like real embeddings, neighbourhoods have a low intrinsic dimension, so
    rankings are meaningful rather than a near-tie among all cluster members.
    A planted copy is its source plus noise of norm ``dup_noise`` (cosine ~0.995).
    Returns the ``[n, dim]`` fp16 tensor on ``device`` and the ``[m, 2]`` (source, copy) pairs.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    n_clusters = max(8, n // 1000)
    unit = torch.nn.functional.normalize
    centres = unit(torch.randn(n_clusters, dim, generator=g, device=device), dim=1)
    basis = torch.linalg.qr(torch.randn(dim, latent, generator=g, device=device))[0].T  # [latent, dim], orthonormal
    x = torch.empty(n, dim, dtype=torch.float16, device=device)
    for i in range(0, n, chunk):
        m = min(chunk, n - i)
        lab = torch.randint(0, n_clusters, (m,), generator=g, device=device)
        z = torch.randn(m, latent, generator=g, device=device) @ basis * (spread / math.sqrt(latent))
        eps = torch.randn(m, dim, generator=g, device=device) * (noise / math.sqrt(dim))
        x[i : i + m] = unit(centres[lab] + z + eps, dim=1).half()
    n_dup = int(n * dup_frac)
    perm = torch.randperm(n, generator=g, device=device)
    src, dst = perm[:n_dup], perm[n_dup : 2 * n_dup]
    noisy = x[src].float() + dup_noise * torch.randn(n_dup, dim, generator=g, device=device) / math.sqrt(dim)
    x[dst] = unit(noisy, dim=1).half()
    return x, torch.stack((src, dst), dim=1).cpu().numpy()


def tie_aware_recall(
    q: np.ndarray, db: np.ndarray, found: np.ndarray, true_idx: np.ndarray, eps: float = 1e-6
) -> float:
    """Mean share of the ``k`` found neighbours at least as similar as the k-th true one (float64)."""
    q64 = q.astype(np.float64)
    k = true_idx.shape[1]
    kth = np.einsum("qd,qd->q", q64, db[true_idx[:, -1]].astype(np.float64))
    sims = np.einsum("qd,qkd->qk", q64, db[np.where(found < 0, 0, found)].astype(np.float64))
    sims[found < 0] = -np.inf
    hits = np.minimum((sims >= kth[:, None] - eps).sum(1), k)
    return float(hits.mean() / k)


def dup_recall(pairs: np.ndarray, idx_of_src: np.ndarray, sim_of_src: np.ndarray, threshold: float) -> float:
    """Share of planted (source, copy) pairs where the copy is a neighbour of the source above ``threshold``."""
    hit = (idx_of_src == pairs[:, 1:2]) & (sim_of_src >= threshold)
    return float(hit.any(1).mean()) if len(pairs) else float("nan")


def rerank(
    x: np.ndarray, queries: np.ndarray, cand: np.ndarray, k: int, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidate ids exactly (fp32) and keep the best ``k``: faiss's ``IndexRefineFlat`` step."""
    out_s = np.empty((len(queries), k), np.float32)
    out_i = np.empty((len(queries), k), np.int64)
    for i in range(0, len(queries), chunk):
        c = cand[i : i + chunk]
        sims = np.einsum("qd,qkd->qk", x[queries[i : i + chunk]], x[np.maximum(c, 0)])
        sims[c < 0] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
        out_s[i : i + chunk] = np.take_along_axis(sims, order, 1)
        out_i[i : i + chunk] = np.take_along_axis(c, order, 1)
    return out_s, out_i


def run_faiss(
    name: str,
    index: Any,
    x32: np.ndarray,
    sample: np.ndarray,
    pairs: np.ndarray,
    k: int,
    full: bool,
    refine: int = 0,
) -> list[dict[str, Any]]:
    """Build ``index``, search all queries (or the sample, extrapolated); with ``refine`` > 0 also
    report the result of re-scoring ``refine * k`` candidates exactly, as a second method."""
    t0 = time.perf_counter()
    if not index.is_trained:
        n_train = min(len(x32), max(64 * getattr(index, "nlist", 1), 50_000))
        index.train(x32[np.random.default_rng(0).choice(len(x32), n_train, replace=False)])
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.add(x32)
    add_s = time.perf_counter() - t0
    k_search = k * max(1, refine)
    queries = np.arange(len(x32)) if full else sample
    t0 = time.perf_counter()
    sims, ids = index.search(x32[queries], k_search)
    search_s = (time.perf_counter() - t0) * len(x32) / len(queries)
    if full:
        s_sim, s_idx, d_sim, d_idx = sims[sample], ids[sample], sims[pairs[:, 0]], ids[pairs[:, 0]]
    else:
        s_sim, s_idx = sims, ids
        d_sim, d_idx = index.search(x32[pairs[:, 0]], k_search)
    base = {"build_s": train_s + add_s, "train_s": train_s, "add_s": add_s, "extrapolated": not full}
    out = [
        {
            **base,
            "method": name,
            "search_s": search_s,
            "s_idx": s_idx[:, :k],
            "s_sim": s_sim[:, :k],
            "d_idx": d_idx[:, :k],
            "d_sim": d_sim[:, :k],
        }
    ]
    if refine:
        t0 = time.perf_counter()
        rs_sim, rs_idx = rerank(x32, queries, ids, k)
        rerank_s = (time.perf_counter() - t0) * len(x32) / len(queries)
        if full:
            s_sim, s_idx, d_sim, d_idx = rs_sim[sample], rs_idx[sample], rs_sim[pairs[:, 0]], rs_idx[pairs[:, 0]]
        else:
            s_sim, s_idx = rs_sim, rs_idx
            d_sim, d_idx = rerank(x32, pairs[:, 0], d_idx, k)
        out.append(
            {
                **base,
                "method": f"{name}+refine{refine}x",
                "search_s": search_s + rerank_s,
                "s_idx": s_idx,
                "s_sim": s_sim,
                "d_idx": d_idx,
                "d_sim": d_sim,
            }
        )
    for r in out:
        r["total_s"] = r["build_s"] + r["search_s"]
    return out


def crossover(
    n: int, dim: int, torch_s: float, ivfpq: dict[str, Any] | None, args: argparse.Namespace, dev: torch.device
) -> dict[str, Any]:
    """Where exact O(N^2 d) search stops paying off against IVF-PQ, from this run's figures.

    Exact all-vs-all costs ``2 N^2 d`` FLOP at the measured effective rate ``R``.
    IVF-PQ (``nlist = 4 sqrt(N)``) costs ``N (2 nlist d / R + nprobe (N / nlist) M / L)``:
    coarse assignment on tensor cores plus scanning ``nprobe / nlist`` of the pool
    at ``M`` code bytes per vector, at ``L`` lookups/s (memory-bound; an assumption,
    faiss-gpu cannot be installed on the machine we measure on).
    """
    rate = 2.0 * n * n * dim / torch_s  # effective FLOP/s of exact search, top-k and re-score included
    sizes = (1e6, 1e7, 1e8, 1e9)
    out: dict[str, Any] = {"exact_effective_tflops": rate / 1e12}
    out["exact_hours_at"] = {f"{m:.0e}": 2.0 * m * m * dim / rate / 3600 for m in sizes}
    out["exact_max_n_in_1h"] = math.sqrt(3600 * rate / (2 * dim))
    if dev.type == "cuda":
        mem = torch.cuda.get_device_properties(dev).total_memory
        out["exact_max_n_in_device_memory"] = 0.7 * mem / (2 * dim)  # fp16 pool, 30 % left for score blocks
    gpu_rate = rate if dev.type == "cuda" else args.assumed_gpu_tflops * 1e12
    m_bytes, nprobe, lut = args.pq_m, args.nprobe, args.lut_rate

    def ivfpq_gpu(m: float) -> float:
        nlist = 4 * math.sqrt(m)
        return m * (2 * nlist * dim / gpu_rate + nprobe * (m / nlist) * m_bytes / lut)

    out["gpu_model"] = {
        "exact_rate_tflops": gpu_rate / 1e12,
        "rate_source": "measured" if dev.type == "cuda" else "assumed",
        "pq_m_bytes": m_bytes,
        "nprobe": nprobe,
        "lut_lookups_per_s": lut,
        "exact_hours_at": {f"{m:.0e}": 2.0 * m * m * dim / gpu_rate / 3600 for m in sizes},
        "ivfpq_hours_at": {f"{m:.0e}": ivfpq_gpu(m) / 3600 for m in sizes},
        "pool_fp16_gib_at": {f"{m:.0e}": m * dim * 2 / 2**30 for m in sizes},
        "pq_codes_gib_at": {f"{m:.0e}": m * m_bytes / 2**30 for m in sizes},
        # Equal work: 2 N^2 d / R = N^1.5 nprobe M / (4 L)  ->  sqrt(N) = nprobe M R / (8 d L).
        "equal_work_n": (nprobe * m_bytes * gpu_rate / (8 * dim * lut)) ** 2,
    }
    if ivfpq:
        # Measured here (IVF-PQ with exact re-scoring, the variant that finds the duplicates):
        # exact a N^2 against faiss-cpu IVF-PQ c + b N^1.5 (training on a fixed-size
        # sample is about constant; add and search scale as N^1.5 with nlist = 4 sqrt(N)).
        a = torch_s / n**2
        b = (ivfpq["add_s"] + ivfpq["search_s"]) / n**1.5
        c = ivfpq["train_s"]
        lo, hi = 1.0, 1e12
        for _ in range(200):  # bisection in log space on a N^2 - b N^1.5 - c, increasing past its root
            mid = math.sqrt(lo * hi)
            lo, hi = (mid, hi) if a * mid**2 < c + b * mid**1.5 else (lo, mid)
        out["measured_crossover_n_vs_faiss_cpu_ivfpq"] = hi
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,10000000", help="comma-separated pool sizes")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--sample", type=int, default=1000, help="queries checked against exact search")
    ap.add_argument("--full-max", type=int, default=50_000, help="run faiss all-vs-all in full up to this size")
    ap.add_argument("--flat-max", type=int, default=10_000_000, help="skip faiss IndexFlatIP timing above this size")
    ap.add_argument(
        "--ivf-max",
        type=int,
        default=2_000_000,
        help="skip the faiss-cpu IVF indexes above this size (their k-means alone takes minutes)",
    )
    ap.add_argument(
        "--torch-dtype",
        default=None,
        choices=["fp16", "bf16", "fp32"],
        help="matmul dtype of the torch search (default fp16 on GPU, fp32 on CPU)",
    )
    ap.add_argument("--nprobe", type=int, default=32)
    ap.add_argument("--pq-m", type=int, default=48, help="IVF-PQ code bytes per vector")
    ap.add_argument("--lut-rate", type=float, default=1.5e12, help="assumed GPU IVF-PQ code lookups/s (model only)")
    ap.add_argument(
        "--assumed-gpu-tflops",
        type=float,
        default=400.0,
        help="exact-search rate for the GPU model when run on CPU (H100 fp16 dense peak ~990)",
    )
    ap.add_argument("--refine", type=int, default=4, help="IVF-PQ: re-score refine*k candidates exactly")
    ap.add_argument("--dup-threshold", type=float, default=0.95)
    ap.add_argument("--query-chunk", type=int, default=None)
    ap.add_argument("--db-chunk", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = parse_args(ap, "one pool of 20k", dict(sizes="20000", sample=500))
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    dev = resolve_device(args.device)
    rows: list[dict[str, Any]] = []
    per_size: dict[str, Any] = {}
    for n in [int(s) for s in args.sizes.split(",")]:
        x, pairs = make_embeddings(n, args.dim, args.seed, dev)
        x16 = x.cpu().numpy()
        x32 = x16.astype(np.float32)
        sample = np.random.default_rng(args.seed).choice(n, min(args.sample, n), replace=False)
        ref = faiss.IndexFlatIP(args.dim)
        ref.add(x32)
        _, true_idx = ref.search(x32[sample], args.k)

        sync(dev)
        t0 = time.perf_counter()
        tdtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32, None: None}[args.torch_dtype]
        sims, ids = knn(
            x,
            x,
            args.k,
            device=dev,
            dtype=tdtype,
            query_chunk=args.query_chunk,
            db_chunk=args.db_chunk,
            progress=n >= 1_000_000,
        )
        sync(dev)
        torch_s = time.perf_counter() - t0
        sims, ids = np.asarray(sims), np.asarray(ids)
        results = [
            {
                "method": f"torch_exact_{dev.type}",
                "build_s": 0.0,
                "search_s": torch_s,
                "total_s": torch_s,
                "extrapolated": False,
                "s_idx": ids[sample],
                "s_sim": sims[sample],
                "d_idx": ids[pairs[:, 0]],
                "d_sim": sims[pairs[:, 0]],
            }
        ]
        full = n <= args.full_max
        if n <= args.flat_max:
            results += run_faiss("faiss_cpu_flat", faiss.IndexFlatIP(args.dim), x32, sample, pairs, args.k, full)
        pq_runs: list[dict[str, Any]] = []
        if n <= args.ivf_max:
            nlist = max(16, int(4 * math.sqrt(n)))
            ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(args.dim), args.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            ivf.nprobe = args.nprobe
            results += run_faiss(f"faiss_cpu_ivf_flat_nlist{nlist}", ivf, x32, sample, pairs, args.k, full)
            pq = faiss.IndexIVFPQ(
                faiss.IndexFlatIP(args.dim), args.dim, nlist, args.pq_m, 8, faiss.METRIC_INNER_PRODUCT
            )
            pq.nprobe = args.nprobe
            pq_runs = run_faiss(
                f"faiss_cpu_ivf_pq{args.pq_m}_nlist{nlist}", pq, x32, sample, pairs, args.k, full, refine=args.refine
            )
            results += pq_runs

        for r in results:
            rows.append(
                {
                    "n": n,
                    "method": r["method"],
                    "build_s": r["build_s"],
                    "search_s": r["search_s"],
                    "total_s": r["total_s"],
                    "queries_per_s": n / r["search_s"],
                    "recall_at_k": tie_aware_recall(x16[sample], x16, r["s_idx"], true_idx),
                    "dup_recall": dup_recall(pairs, r["d_idx"], r["d_sim"], args.dup_threshold),
                    "extrapolated": r["extrapolated"],
                }
            )
        per_size[str(n)] = {
            "n_duplicates": len(pairs),
            "crossover": crossover(n, args.dim, torch_s, pq_runs[-1] if pq_runs else None, args, dev),
        }
        del x
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    largest = per_size[max(per_size, key=int)]["crossover"]
    gm = largest["gpu_model"]
    hours = lambda d: ", ".join(f"{k}: {v:.3g} h" for k, v in d.items())  # noqa: E731
    notes = (
        f"Exact search ran at {largest['exact_effective_tflops']:.3g} effective TFLOP/s on this device "
        f"(all-vs-all under 1 h up to N = {largest['exact_max_n_in_1h']:.3g}"
        + (
            f"; fp16 pool fits in device memory up to N = {largest['exact_max_n_in_device_memory']:.3g}"
            if "exact_max_n_in_device_memory" in largest
            else ""
        )
        + ")."
        + (
            f" Measured crossover against faiss-cpu IVF-PQ on this machine: N = "
            f"{largest['measured_crossover_n_vs_faiss_cpu_ivfpq']:.3g}."
            if "measured_crossover_n_vs_faiss_cpu_ivfpq" in largest
            else ""
        )
        + f"\n\nGPU model ({gm['rate_source']} exact rate {gm['exact_rate_tflops']:.3g} TFLOP/s, IVF-PQ "
        f"M={gm['pq_m_bytes']} nprobe={gm['nprobe']} at {gm['lut_lookups_per_s']:.3g} lookups/s): "
        f"exact {hours(gm['exact_hours_at'])}; IVF-PQ {hours(gm['ivfpq_hours_at'])}. "
        f"Equal-work N = {gm['equal_work_n']:.3g}; fp16 pool at 1e8 = {gm['pool_fp16_gib_at']['1e+08']:.0f} GiB "
        f"vs PQ codes {gm['pq_codes_gib_at']['1e+08']:.1f} GiB."
    )
    write_results("gpu_knn", dev, vars(args), {"sizes": per_size}, rows, args.out_dir, notes, args.tag)


if __name__ == "__main__":
    main()
