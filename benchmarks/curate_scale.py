"""Scale benchmark of curation's dedup and retrieval on synthetic clustered embeddings.

For each size: write ``n`` L2-normalised float16 vectors (``dim`` dims, clustered,
1% planted near-duplicates) to a ``.npy``; then, each in a fresh process so that
peak RSS is its own,

* **pipeline**: the curate code path: memory-mapped input, index chosen by size
  (``pipeline.curate.knn_index``), batched self-search, thresholded edges,
  union-find dedup, and seed retrieval (``knn_retrieve``);
* **bare**: a plain FAISS script doing the same searches with the same index
  factory string and parameters on the array loaded whole in float32.

Quality: recall@k of the pipeline's neighbours against exact search on a sample
of queries, and the share of planted duplicate pairs that dedup groups together.

    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/curate_scale.py --sizes 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DUP_RATE, THRESHOLD, N_SEEDS, SAMPLE = 0.01, 0.95, 1000, 1000


def make_data(n: int, dim: int, path: Path, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors, ``DUP_RATE`` of them near-copies of earlier rows; returns the planted pairs."""
    rng = np.random.default_rng(seed)
    n_clusters = max(10, n // 1000)
    centers = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(n, dim))
    n_dup = int(n * DUP_RATE)
    n_orig = n - n_dup
    for s in range(0, n_orig, 100_000):
        e = min(n_orig, s + 100_000)
        x = centers[rng.integers(0, n_clusters, e - s)] + rng.normal(
            scale=1.0 / np.sqrt(dim), size=(e - s, dim)
        ).astype(np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    src = np.sort(rng.choice(n_orig, n_dup, replace=False))
    x = out[src].astype(np.float32) + rng.normal(scale=0.12 / np.sqrt(dim), size=(n_dup, dim)).astype(np.float32)
    out[n_orig:] = x / np.linalg.norm(x, axis=1, keepdims=True)
    out.flush()
    return np.stack([src, np.arange(n_orig, n)], axis=1)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _cpu_s() -> float:
    """User + system CPU seconds of this process: less sensitive than wall time to other jobs on a shared machine."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def worker_pipeline(data: Path, k: int, out: Path) -> dict:
    from pipeline.config.curate import IndexConfig
    from pipeline.curate.dedup import dedup, edges_batched
    from pipeline.curate.knn_index import build_index, choose_factory, search
    from pipeline.curate.retrieval import knn_retrieve

    t0 = time.perf_counter()
    x = np.load(data, mmap_mode="r")
    opts = IndexConfig()
    idx = build_index(x, opts)
    t1 = time.perf_counter()
    sample = {}

    def search_keep_sample(q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
        d, i = idx.search(q, kk)
        if not sample:  # the first batch starts at row 0: keep the recall sample's neighbours
            sample["ids"] = i[:SAMPLE].copy()
        return d, i

    i, j, s, _ = edges_batched(search_keep_sample, x, k + 1, THRESHOLD, 1, opts.batch_rows)
    t2 = time.perf_counter()
    removals, labels = dedup(len(x), i, j, s, np.ones(len(x), np.int64), [f"{r:09d}" for r in range(len(x))])
    t3 = time.perf_counter()
    ssims, sids = search(idx, x[:N_SEEDS], k, opts.batch_rows)
    ret = knn_retrieve(ssims, sids)
    t4 = time.perf_counter()
    cal_s = calibration_cost(lambda q: idx.search(q, 2 * k)) if CALIBRATE else 0.0
    t4 += cal_s
    np.save(out / "labels.npy", labels)
    np.save(out / "sample_ids.npy", sample["ids"])
    return {
        "factory": choose_factory(*x.shape, opts),
        "build_s": t1 - t0,
        "self_search_s": t2 - t1,
        "dedup_graph_s": t3 - t2,
        "retrieve_s": t4 - t3 - cal_s,
        "calibration_s": cal_s,
        "total_s": t4 - t0,
        "search_total_s": (t1 - t0) + (t2 - t1) + (t4 - t3),
        "removed": len(removals),
        "retrieved": int(ret.items.size),
        "collisions": ret.stats["collisions"],
        "cpu_s": _cpu_s(),
        "peak_rss_gib": _peak_rss_gib(),
    }


CALIBRATE = True


def calibration_cost(search_sample: object) -> float:
    """Seconds of the curate steps' label-free threshold calibration (its size does not grow with the pool).

    The default sample (``CalibrationConfig.images`` package images, 32-320 px, in place of pool
    images: the vectors here have no pixels) is copied once per kind of the copy suite and scored
    (``calibrate.copy_scores``, shared by dedup and decontamination), each image is refined against a
    neighbour, twice (one per step), and the sample's nearest neighbours are searched in the index.
    Decoding the sample from the shards is not included.
    """
    from benchmarks.copy_domain import DomainConfig, originals
    from pipeline.config.curate import CalibrationConfig, EmbedConfig
    from pipeline.curate import calibrate as cb

    c, e = CalibrationConfig(), EmbedConfig()
    imgs = [im.convert("L") for _, im, _ in originals(DomainConfig())][: c.images]
    mean = np.zeros(2 * e.copy_grid**2, np.float32)
    t0 = time.perf_counter()
    fine = cb.fine_mean_of(imgs, e)
    cb.copy_scores(imgs, e, c.suite, mean, fine_mean=fine)
    for _ in ("dedup", "decontaminate"):
        cb.noncopy_scores(imgs, imgs[1:] + imgs[:1], e, mean, fine)
        search_sample(np.random.default_rng(0).normal(size=(len(imgs), 384)).astype(np.float32))  # type: ignore[operator]
    return time.perf_counter() - t0


def worker_bare(data: Path, k: int, factory: str, nprobe: int) -> dict:
    import faiss

    t0 = time.perf_counter()
    x = np.load(data).astype(np.float32)
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(0)
        index.train(x[np.sort(rng.choice(len(x), size=min(len(x), 100_000), replace=False))])
    index.add(x)
    if "IVF" in factory:
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", nprobe)
    t1 = time.perf_counter()
    index.search(x, k + 1)
    t2 = time.perf_counter()
    index.search(x[:N_SEEDS], k)
    t3 = time.perf_counter()
    return {
        "cpu_s": _cpu_s(),
        "build_s": t1 - t0,
        "self_search_s": t2 - t1,
        "retrieve_s": t3 - t2,
        "total_s": t3 - t0,
        "peak_rss_gib": _peak_rss_gib(),
    }


def exact_neighbours(data: Path, k: int) -> np.ndarray:
    """Exact top-k (excluding self) of the first ``SAMPLE`` rows, streaming the matrix."""
    x = np.load(data, mmap_mode="r")
    q = np.asarray(x[:SAMPLE], np.float32)
    best_s = np.full((SAMPLE, k + 1), -np.inf, np.float32)
    best_i = np.zeros((SAMPLE, k + 1), np.int64)
    for s in range(0, len(x), 200_000):
        sim = q @ np.asarray(x[s : s + 200_000], np.float32).T
        cs = np.concatenate([best_s, sim], axis=1)
        ci = np.concatenate([best_i, np.arange(s, s + sim.shape[1])[None].repeat(SAMPLE, 0)], axis=1)
        top = np.argpartition(-cs, k, axis=1)[:, : k + 1]
        best_s, best_i = np.take_along_axis(cs, top, 1), np.take_along_axis(ci, top, 1)
    order = np.argsort(-best_s, axis=1)
    best_i = np.take_along_axis(best_i, order, 1)
    return np.array([[j for j in row if j != r][:k] for r, row in enumerate(best_i)])


def _sub(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_size(n: int, dim: int, k: int, tmp: Path) -> dict:
    data = tmp / f"x{n}.npy"
    pairs = make_data(n, dim, data)
    pipe = _sub("--worker", "pipeline", "--data", str(data), "--k", str(k), "--out", str(tmp))
    bare = _sub("--worker", "bare", "--data", str(data), "--k", str(k), "--factory", pipe["factory"], "--nprobe", "16")
    got = [[j for j in row if j != r][:k] for r, row in enumerate(np.load(tmp / "sample_ids.npy"))]
    exact = exact_neighbours(data, k)
    recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact)]))
    labels = np.load(tmp / "labels.npy")
    dup_recall = float(np.mean(labels[pairs[:, 0]] == labels[pairs[:, 1]]))
    res = {
        "n": n,
        "dim": dim,
        "k": k,
        "pipeline": pipe,
        "bare_faiss": bare,
        f"recall@{k}_vs_exact": recall,
        "planted_duplicate_recall": dup_recall,
        "planted_pairs": len(pairs),
        "overhead_ratio_search": pipe["search_total_s"] / bare["total_s"],
        "overhead_ratio_total": pipe["total_s"] / bare["total_s"],
    }
    print(json.dumps(res), flush=True)
    return res


def write_results(results: list[dict]) -> None:
    """Write JSON + markdown; sizes measured by an earlier invocation are kept unless re-measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    old = RESULTS / "curate_scale.json"
    if old.is_file():
        mine = {r["n"] for r in results}
        results = sorted(
            [r for r in json.loads(old.read_text())["results"] if r["n"] not in mine] + results, key=lambda r: r["n"]
        )
    meta = {
        "machine": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        "threshold": THRESHOLD,
        "dup_rate": DUP_RATE,
        "seeds": N_SEEDS,
        "recall_sample": SAMPLE,
    }
    (RESULTS / "curate_scale.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [
        "# Curate scale benchmark",
        "",
        f"Last invocation `{' '.join(sys.argv)}` on {meta['machine']}, "
        f"load average {os.getloadavg()[0]:.1f} at the end; rows of other sizes are kept from earlier invocations.",
        "",
        "| n | index | pipeline wall s | bare FAISS wall s | wall ratio | CPU s (pipe / bare) | CPU ratio "
        "| peak RSS GiB (pipe / bare) | recall@k vs exact | dup recall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        p, b = r["pipeline"], r["bare_faiss"]
        rec = r[f"recall@{r['k']}_vs_exact"]
        lines.append(
            f"| {r['n']:,} | {p['factory']} | {p['total_s']:.1f} | {b['total_s']:.1f} "
            f"| {r['overhead_ratio_total']:.2f} "
            f"| {p['cpu_s']:.1f} / {b['cpu_s']:.1f} | {p['cpu_s'] / b['cpu_s']:.2f} "
            f"| {p['peak_rss_gib']:.2f} / {b['peak_rss_gib']:.2f} | {rec:.3f} "
            f"| {r['planted_duplicate_recall']:.3f} |"
        )
    lines += [
        "",
        "Pipeline total = index build + self kNN search + dedup graph (union-find) + seed retrieval; bare = the same "
        "FAISS calls (same factory, nprobe) on the whole array in float32, without the graph step.",
    ]
    (RESULTS / "curate_scale.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--worker", choices=["pipeline", "bare"])
    ap.add_argument("--data", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--factory")
    ap.add_argument("--nprobe", type=int, default=16)
    ap.add_argument("--no-calibration", action="store_true", help="leave the threshold calibration out")
    a = ap.parse_args()
    global CALIBRATE
    CALIBRATE = not a.no_calibration
    if a.worker == "pipeline":
        print(json.dumps(worker_pipeline(a.data, a.k, a.out)))
        return
    if a.worker == "bare":
        print(json.dumps(worker_bare(a.data, a.k, a.factory, a.nprobe)))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        results = [run_size(n, a.dim, a.k, Path(tmp)) for n in a.sizes]
    write_results(results)


if __name__ == "__main__":
    main()
