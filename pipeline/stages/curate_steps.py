"""The curate stage's sub-steps: config in, files and a manifest out.

Each step is ``fn(ctx, results, folder, hash) -> Manifest`` with ``fn.hash(ctx,
results)`` giving the hash its outputs must carry; the algorithms themselves
live in :mod:`pipeline.curate` and never see a config.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.core.manifest import Manifest, atomic_write_bytes, config_hash, read_manifest
from pipeline.core.stage import section
from pipeline.curate import copy_descriptor as cd
from pipeline.curate import dedup as dd
from pipeline.curate import kmeans as km
from pipeline.curate import retrieval as rt
from pipeline.curate import scoring
from pipeline.curate.decontam import Contamination, best_match, best_per_pool, candidate_pairs, find_contaminated
from pipeline.curate.embed import load_embeddings
from pipeline.curate.knn_index import IndexOptions, RowSubset, build_index, choose_factory, knn
from pipeline.curate.write import write_curated
from pipeline.io.shards import list_shards, read_metadata
from pipeline.models.backbone import BackboneSpec, create_backbone, data_config
from pipeline.stages import curate_verify as CV

log = logging.getLogger(__name__)


@dataclass
class Context:
    cfg: DictConfig
    root: Path
    ingest: Path
    emb: dict[str, Path]
    emb_hash: dict[str, str]

    def index_opts(self) -> IndexOptions:
        return IndexOptions(**section(self.cfg, "curate.index"), seed=self.cfg.seed)

    def pool_meta(self) -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in read_metadata(self.ingest / "pool")}


def select(cfg: DictConfig, key: str) -> Any:
    """A plain copy of any config node (dict, list or scalar), for hashing."""
    node = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def load_backbone(b: DictConfig) -> tuple[Any, Any]:
    """The backbone and its eval transform, resizing the whole image (no centre crop: copies may be crops)."""
    model = create_backbone(BackboneSpec(b.name, b.weights, b.img_size))
    dc = {**data_config(model), "crop_pct": 1.0}
    return model, timm.data.create_transform(**dc)


def _step(*keys: str) -> Callable[[Callable[..., Manifest]], Any]:
    """Attach ``fn.hash``: the config sections ``keys`` plus embeddings and the upstream steps' hashes."""

    def wrap(fn: Callable[..., Manifest]) -> Any:
        def h(ctx: Context, results: dict[str, Manifest]) -> str:
            return config_hash([select(ctx.cfg, k) for k in keys], ctx.emb_hash, {n: m.config_hash for n, m in results.items()})

        fn.hash = h  # type: ignore[attr-defined]
        return fn

    return wrap


def _features(ctx: Context, source: str, kind: str, folder: Path) -> tuple[np.ndarray, int, list[str]]:
    """Search rows of ``source`` for ``kind`` (``emb`` or ``copy``), rows per item, ids."""
    e = ctx.cfg.curate.embed
    x, ids = load_embeddings(ctx.emb[source], kind)
    if kind == "emb":
        return x, 1, ids
    if kind != "copy":
        raise ValueError(f"curate features {kind!r}: use copy or emb")
    crops = len(e.copy_scales)
    pool_x, _ = load_embeddings(ctx.emb["pool"], "copy")
    mean = cd.pool_mean(pool_x, crops, seed=ctx.cfg.seed)  # the pool's shared layout, removed from every image
    return cd.center_to_file(x, mean, crops, folder / f".{source}_copy_centered.npy"), crops, ids


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_bytes(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode())


def _save(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue())


def _verify(
    ctx: Context,
    v: DictConfig,
    folder: Path,
    prefix: str,
    pairs: list[tuple[str, str]],
    roots: tuple[Path, Path],
    calibrate_ids: list[str],
    records: list[dict[str, Any]],
) -> tuple[np.ndarray | None, dict[str, Any], dict[str, int], dict[str, float]]:
    """Confirm candidate pairs by the aligned local comparison, when ``v.enabled``.

    Writes ``calibration.json`` and ``candidates.jsonl`` (``records`` plus the scores) and
    removes both first, so a run with verification off leaves none from an earlier run.

    Returns:
        The accepted mask over ``pairs`` (None when off), then the manifest's extra, counts and metrics.
    """
    for stale in ("candidates.jsonl", "calibration.json"):
        (folder / stale).unlink(missing_ok=True)
    if not v.enabled:
        return None, {}, {}, {}
    cal, info = CV.threshold(v, roots[0], calibrate_ids, ctx.cfg.seed, folder)
    vs = CV.score(v, pairs, roots, ctx.cfg.progress)
    _jsonl(folder / "candidates.jsonl", [{**r, **x} for r, x in zip(records, CV.rows(vs, cal))])
    counts = {f"verify_{k}": n for k, n in CV.summary(vs, cal).items()}
    info.update(counts)
    metrics = {f"{prefix}.verify_structure_threshold": cal.structure, f"{prefix}.verify_outlier_threshold": cal.outlier}
    return cal.accepts(vs), {"verification": info}, counts, metrics


@_step("curate.dedup", "curate.index", "curate.embed.copy_scales")
def dedup_step(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    d = ctx.cfg.curate.dedup
    folder.mkdir(parents=True, exist_ok=True)
    rows, per, ids = _features(ctx, "pool", d.features, folder)
    queries = rows[::per] if per > 1 else rows  # the full-image row queries every crop of the others
    opts = ctx.index_opts()
    index = build_index(rows, opts, ctx.cfg.progress)
    v = d.verify
    thr = v.candidate_threshold if v.enabled else d.threshold
    i, j, s, nn1 = dd.edges_batched(index.search, queries, d.k + per, thr, per, opts.batch_rows, ctx.cfg.progress)
    pool = ctx.ingest / "pool"
    ok, extra, vcounts, vmetrics = _verify(
        ctx, v, folder, "dedup", [(ids[a], ids[b]) for a, b in zip(i.tolist(), j.tolist())], (pool, pool),
        [ids[x] for x in np.concatenate([i, j]).tolist()],
        [{"a": ids[a], "b": ids[b], "similarity": round(float(x), 5)} for a, b, x in zip(i, j, s)],
    )
    if ok is not None:
        i, j, s = i[ok], j[ok], s[ok]
    meta = ctx.pool_meta()
    pixels = [meta[x]["width"] * meta[x]["height"] for x in ids]
    removals, labels = dd.dedup(len(ids), i, j, s, pixels, ids)
    _save(folder / "nn1_similarity.npy", nn1.astype(np.float32))
    _save(folder / "labels.npy", labels)
    _jsonl(folder / "removals.jsonl", [{"id": ids[r.removed], "kept": ids[r.kept], "linked_to": ids[r.linked_to],
                                        "similarity": round(r.similarity, 5)} for r in removals])
    with (ctx.ingest / "pool" / "records.jsonl").open() as fh:
        byte_dups = sum(1 for line in fh if '"duplicate"' in line)
    groups = int((np.bincount(labels) > 1).sum())
    (folder / ".pool_copy_centered.npy").unlink(missing_ok=True)
    return Manifest("curate/dedup", h, artifacts={"removals": "removals.jsonl", "labels": "labels.npy", "nn1": "nn1_similarity.npy"},
                    counts={"pool": len(ids), "byte_duplicates_at_ingest": byte_dups, "near_duplicates_removed": len(removals),
                            "duplicate_groups": groups, "edges": int(i.size), **vcounts}, metrics=vmetrics,
                    extra={"index": choose_factory(rows.shape[0], rows.shape[1], opts), "features": d.features,
                           "threshold": thr, "keeper_policy": "most pixels, then smallest id", **extra})


@_step("curate.decontam", "curate.index", "curate.embed.copy_scales")
def decontam_step(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    d = ctx.cfg.curate.decontam
    folder.mkdir(parents=True, exist_ok=True)
    if "eval" not in ctx.emb:
        _jsonl(folder / "contaminated.jsonl", [])
        return Manifest("curate/decontaminate", h, counts={"contaminated": 0}, extra={"note": "no eval source"})
    pool_rows, per, pool_ids = _features(ctx, "pool", d.features, folder)
    eval_rows, _, eval_ids = _features(ctx, "eval", d.features, folder)
    opts = ctx.index_opts()
    index = build_index(eval_rows, opts)
    v = d.verify
    thr = v.candidate_threshold if v.enabled else d.threshold
    found, best_parts = [], []
    step = max(1, opts.batch_rows // per) * per  # whole items per batch
    for b in range(0, pool_rows.shape[0], step):
        q = np.ascontiguousarray(pool_rows[b : b + step], dtype=np.float32)
        sims, nn = index.search(q, min(d.k, index.ntotal))
        if v.enabled:  # every candidate pair, not just each pool item's best match
            found += [Contamination(c.pool + b // per, c.eval, c.similarity) for c in candidate_pairs(sims, nn, thr, per, per)]
        else:
            found += [Contamination(c.pool + b // per, c.eval, c.similarity) for c in find_contaminated(sims, nn, thr, per, per)]
        best_parts.append(best_match(sims, nn, per))
    best = np.concatenate(best_parts) if best_parts else np.zeros(0, np.float32)
    pool = ctx.ingest / "pool"
    ok, extra, vcounts, vmetrics = _verify(
        ctx, v, folder, "decontam", [(pool_ids[c.pool], eval_ids[c.eval]) for c in found], (pool, ctx.ingest / "eval"),
        [pool_ids[c.pool] for c in found],
        [{"id": pool_ids[c.pool], "eval_id": eval_ids[c.eval], "similarity": round(c.similarity, 5)} for c in found],
    )
    if ok is not None:
        found = best_per_pool([c for c, keep in zip(found, ok) if keep])
    _save(folder / "best_similarity.npy", best.astype(np.float32))
    _jsonl(folder / "contaminated.jsonl", [{"id": pool_ids[c.pool], "eval_id": eval_ids[c.eval],
                                            "similarity": round(c.similarity, 5)} for c in found])
    for p in folder.glob(".*_copy_centered.npy"):
        p.unlink()
    return Manifest("curate/decontaminate", h, artifacts={"contaminated": "contaminated.jsonl", "best": "best_similarity.npy"},
                    counts={"contaminated": len(found), "eval": len(eval_ids), **vcounts}, metrics=vmetrics,
                    extra={"features": d.features, "threshold": thr, **extra})


def _read_ids(path: Path, key: str = "id") -> list[str]:
    return [json.loads(line)[key] for line in path.open()] if path.is_file() else []


@_step("curate.retrieval", "curate.index")
def retrieve_step(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    r = ctx.cfg.curate.retrieval
    folder.mkdir(parents=True, exist_ok=True)
    x, _, ids = _features(ctx, "pool", "emb", folder)
    drop = set(_read_ids(ctx.root / "dedup" / "removals.jsonl")) | set(_read_ids(ctx.root / "decontaminate" / "contaminated.jsonl"))
    cand = np.array([k for k, i in enumerate(ids) if i not in drop], np.int64)
    sub = RowSubset(x, cand)
    opts = ctx.index_opts()
    seeds = load_embeddings(ctx.emb["seeds"], "emb") if "seeds" in ctx.emb else None
    if r.strategy != "hierarchical" and seeds is None:
        raise FileNotFoundError(f"curate/retrieval={r.strategy} needs seeds; use curate/retrieval=hierarchical without them")
    lineage: dict[str, dict[str, Any]] = {}
    if r.strategy == "knn":
        assert seeds is not None  # checked above
        sims, nn = knn(sub, seeds[0], r.k, opts, ctx.cfg.progress)
        res = rt.knn_retrieve(sims, nn, min_similarity=r.min_similarity)
        for it, sd, s in zip(res.items.tolist(), res.source.tolist(), res.similarity.tolist()):
            lineage[ids[cand[it]]] = {"strategy": "knn", "seed": seeds[1][sd], "similarity": round(s, 5)}
    elif r.strategy == "cluster":
        assert seeds is not None  # checked above
        cent = km.fit_kmeans(sub, r.n_clusters, r.niter, seed=ctx.cfg.seed)
        lab, psim = km.assign(sub, cent)
        slab, _ = km.assign(seeds[0], cent)
        res = rt.cluster_retrieve(lab, psim, slab, r.per_cluster, seed=ctx.cfg.seed)
        for it, cl, s in zip(res.items.tolist(), res.source.tolist(), res.similarity.tolist()):
            lineage[ids[cand[it]]] = {"strategy": "cluster", "cluster": int(cl), "similarity": round(s, 5)}
    elif r.strategy == "hierarchical":
        hk = km.hierarchical_kmeans(sub, list(r.levels), r.niter, seed=ctx.cfg.seed)
        size = r.size if r.size is not None else len(cand) // 2
        items = km.balanced_sample(hk, size, ctx.cfg.seed, r.pick)
        top = hk.item_labels(len(hk.labels))
        res = rt.Retrieved(items, hk.labels[0][items], hk.item_sim[items], np.ones(len(items), np.int64),
                           {"unique": len(items), "top_clusters": len(np.unique(top))})
        for it in items.tolist():
            lineage[ids[cand[it]]] = {"strategy": "hierarchical", "cluster": int(hk.labels[0][it]),
                                      "top_cluster": int(top[it]), "similarity": round(float(hk.item_sim[it]), 5)}
    else:
        raise ValueError(f"curate.retrieval.strategy {r.strategy!r}: use knn, cluster or hierarchical")
    _jsonl(folder / "retrieved.jsonl", [{"id": k, **v} for k, v in lineage.items()])
    if seeds is not None:  # the seeds' nearest candidates, for the report whatever the strategy
        sims, nn = knn(sub, seeds[0][: ctx.cfg.curate.report.seeds_shown], ctx.cfg.curate.report.neighbours_shown, opts)
        _jsonl(folder / "seed_neighbours.jsonl", [{"seed": seeds[1][q], "neighbours": [[ids[cand[n]], round(float(s), 4)]
               for n, s in zip(nn[q], sims[q]) if n >= 0]} for q in range(nn.shape[0])])
    return Manifest("curate/retrieve", h, artifacts={"retrieved": "retrieved.jsonl"},
                    counts={"candidates": len(cand), "retrieved": len(lineage), **res.stats},
                    extra={"strategy": r.strategy})


@_step("curate.shard_size")
def write_step(ctx: Context, results: dict[str, Manifest], folder: Path, h: str) -> Manifest:
    lineage = {}
    for line in (ctx.root / "retrieve" / "retrieved.jsonl").open():
        row = json.loads(line)
        lineage[row.pop("id")] = row
    shards, n = write_curated(list_shards(ctx.ingest / "pool"), lineage, folder, ctx.cfg.curate.shard_size, ctx.cfg.progress)
    with (folder / "records.jsonl").open("w") as out:
        for s in shards:
            out.write(s.with_suffix(".records.jsonl").read_text())
    return Manifest("curate/shards", h, artifacts={"shards": "shard-*.tar", "records": "records.jsonl"},
                    counts={"images": n, "shards": len(shards)},
                    extra={"lineage": "meta['curation'] of every sample; records.jsonl lists them"})


def ground_truth(ctx: Context) -> dict[str, Any] | None:
    """The recipe's ground truth, if it has one (the path recorded at ingest, else ``recipe/``)."""
    gt = read_manifest(ctx.ingest / "pool").extra.get("ground_truth")
    for p in ([Path(gt)] if gt else []) + [ctx.ingest.parent / "recipe" / "ground_truth.json"]:
        if p.is_file():
            return json.loads(p.read_text())
    return None


def score(ctx: Context, results: dict[str, Manifest]) -> dict[str, float]:
    """Scores against the ground truth (when the recipe has one)."""
    gt = ground_truth(ctx)
    if gt is None:
        return {}
    src = {i: m["source"] for i, m in ctx.pool_meta().items()}
    out: dict[str, float] = {}
    if "dedup" in results:
        _, ids = load_embeddings(ctx.emb["pool"], "copy")
        labels = np.load(ctx.root / "dedup" / "labels.npy")
        rem = [(src[json.loads(line)["id"]], src[json.loads(line)["kept"]]) for line in (ctx.root / "dedup" / "removals.jsonl").open()]
        out.update(scoring.score_dedup(gt, src.values(), rem, {src[i]: int(lab) for i, lab in zip(ids, labels)}))
    if "decontaminate" in results:
        esrc = {r["id"]: r["source"] for r in read_metadata(ctx.ingest / "eval")} if (ctx.ingest / "eval").is_dir() else {}
        rows = [json.loads(line) for line in (ctx.root / "decontaminate" / "contaminated.jsonl").open()]
        out.update(scoring.score_decontam(gt, src.values(), [(src[r["id"]], esrc.get(r["eval_id"], "")) for r in rows]))
    if "retrieve" in results:
        out.update(scoring.score_retrieval(gt, src.values(), [src[i] for i in _read_ids(ctx.root / "retrieve" / "retrieved.jsonl")]))
    return out


from pipeline.stages.curate_report import report_step  # noqa: E402 - uses this module's helpers

__all__ = ["Context", "decontam_step", "dedup_step", "load_backbone", "report_step", "retrieve_step", "score", "write_step"]
