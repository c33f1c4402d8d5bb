"""The retrieve step: the curated ids, from the candidates that dedup and decontaminate left.

Writes ``retrieved.jsonl`` (each id with its lineage: seed or cluster and
similarity) and, when there are seeds, ``seed_neighbours.jsonl`` (the first
seeds' nearest candidates, for the report whatever the strategy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.curate import RetrievalConfig
from pipeline.core.manifest import Manifest
from pipeline.curate import kmeans as km
from pipeline.curate import retrieval as rt
from pipeline.curate.embed import load_embeddings
from pipeline.curate.knn_index import RowSubset, knn
from pipeline.stages.curate.context import Context, Step, features, read_ids, write_jsonl

Lineage = dict[str, dict[str, Any]]


def _hash(ctx: Context, results: dict[str, Manifest]) -> str:
    return ctx.upstream_hash(results, ctx.opts.retrieval, ctx.opts.index)


def _knn(
    ctx: Context, r: RetrievalConfig, sub: RowSubset, seeds: tuple[np.ndarray, list[str]], names: list[str]
) -> tuple[rt.Retrieved, Lineage]:
    sims, nn = knn(sub, seeds[0], r.k, ctx.opts.index, ctx.progress, ctx.seed)
    res = rt.knn_retrieve(sims, nn, min_similarity=r.min_similarity)
    lineage = {
        names[it]: {"strategy": "knn", "seed": seeds[1][sd], "similarity": round(s, 5)}
        for it, sd, s in zip(res.items.tolist(), res.source.tolist(), res.similarity.tolist())
    }
    return res, lineage


def _cluster(
    ctx: Context, r: RetrievalConfig, sub: RowSubset, seeds: tuple[np.ndarray, list[str]], names: list[str]
) -> tuple[rt.Retrieved, Lineage]:
    cent = km.fit_kmeans(sub, r.n_clusters, r.niter, seed=ctx.seed)
    lab, psim = km.assign(sub, cent)
    slab, _ = km.assign(seeds[0], cent)
    res = rt.cluster_retrieve(lab, psim, slab, r.per_cluster, seed=ctx.seed)
    lineage = {
        names[it]: {"strategy": "cluster", "cluster": int(cl), "similarity": round(s, 5)}
        for it, cl, s in zip(res.items.tolist(), res.source.tolist(), res.similarity.tolist())
    }
    return res, lineage


def _hierarchical(ctx: Context, r: RetrievalConfig, sub: RowSubset, names: list[str]) -> tuple[rt.Retrieved, Lineage]:
    hk = km.hierarchical_kmeans(sub, list(r.levels), r.niter, seed=ctx.seed)
    size = r.size if r.size is not None else len(sub) // 2
    items = km.balanced_sample(hk, size, ctx.seed, r.pick)
    top = hk.item_labels(len(hk.labels))
    stats = {"unique": len(items), "top_clusters": len(np.unique(top))}
    res = rt.Retrieved(items, hk.labels[0][items], hk.item_sim[items], np.ones(len(items), np.int64), stats)
    lineage = {
        names[it]: {
            "strategy": "hierarchical",
            "cluster": int(hk.labels[0][it]),
            "top_cluster": int(top[it]),
            "similarity": round(float(hk.item_sim[it]), 5),
        }
        for it in items.tolist()
    }
    return res, lineage


def run(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    r = ctx.opts.retrieval
    folder.mkdir(parents=True, exist_ok=True)
    x, _, ids = features(ctx, "pool", "emb", folder)
    drop = set(read_ids(ctx.root / "dedup" / "removals.jsonl"))
    drop |= set(read_ids(ctx.root / "decontaminate" / "contaminated.jsonl"))
    cand = np.array([k for k, i in enumerate(ids) if i not in drop], np.int64)
    names = [ids[k] for k in cand.tolist()]  # candidate row -> pool id
    sub = RowSubset(x, cand)
    seeds = load_embeddings(ctx.emb["seeds"], "emb") if "seeds" in ctx.emb else None
    if r.strategy == "hierarchical":
        res, lineage = _hierarchical(ctx, r, sub, names)
    elif r.strategy not in ("knn", "cluster"):
        raise ValueError(f"curate.retrieval.strategy {r.strategy!r}: use knn, cluster or hierarchical")
    elif seeds is None:
        raise FileNotFoundError(
            f"curate/retrieval={r.strategy} needs seeds; use curate/retrieval=hierarchical without them"
        )
    else:
        res, lineage = (_knn if r.strategy == "knn" else _cluster)(ctx, r, sub, seeds, names)
    write_jsonl(folder / "retrieved.jsonl", [{"id": k, **v} for k, v in lineage.items()])
    if seeds is not None:  # the seeds' nearest candidates, for the report whatever the strategy
        rc = ctx.opts.report
        sims, nn = knn(sub, seeds[0][: rc.seeds_shown], rc.neighbours_shown, ctx.opts.index, seed=ctx.seed)
        rows = [
            {
                "seed": seeds[1][q],
                "neighbours": [[names[n], round(float(s), 4)] for n, s in zip(nn[q], sims[q]) if n >= 0],
            }
            for q in range(nn.shape[0])
        ]
        write_jsonl(folder / "seed_neighbours.jsonl", rows)
    return Manifest(
        "curate/retrieve",
        h,
        artifacts={"retrieved": "retrieved.jsonl"},
        counts={"candidates": len(cand), "retrieved": len(lineage), **res.stats},
        extra={"strategy": r.strategy},
    )


STEP = Step("retrieve", "retrieve", _hash, run)
