"""Curate stage: embed -> dedup -> decontaminate -> retrieve -> write -> report.

Outputs (under ``<paths.output_dir>/curate``), one folder and manifest per step,
each skipped on a re-run when its config hash matches::

    embed/<source>/{emb,copy}-NNNNNN.npy, ids-NNNNNN.json  per input shard (resumable, splittable)
    embed/<source>/{emb,copy}.npy, ids.json              consolidated, memory-mapped later
    dedup/removals.jsonl      near-duplicates removed, in favour of which, at what similarity
    decontaminate/contaminated.jsonl   pool images that copy an evaluation image
    retrieve/retrieved.jsonl  the curated ids with their lineage
    shards/shard-*.tar        the curated WebDataset shards (original bytes; meta["curation"])
    report/index.html         grids, histograms, counts
    manifest.json             the stage summary (counts, metrics, lineage)
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

from omegaconf import DictConfig

from pipeline.config.curate import CURATE_STEPS
from pipeline.core import tracking
from pipeline.core.manifest import Manifest, atomic_write_bytes, config_hash, lineage_entry, read_manifest
from pipeline.core.stage import completed, section, stage_dir
from pipeline.curate.embed import EmbedOptions, consolidate, dist_rank_world, embed_shards, shard_embedded
from pipeline.io.shards import list_shards
from pipeline.stages import curate_steps as S

log = logging.getLogger(__name__)


def _embed_source(cfg: DictConfig, source: str, in_dir: Path, out_dir: Path, run_embed: bool) -> Manifest | None:
    """Embed one source (this rank's shards); consolidate once every shard is done."""
    e = cfg.curate.embed
    h = config_hash([S.select(cfg, f"curate.embed.{k}") for k in ("backbone", "copy_grid", "copy_scales")],
                    lineage_entry(in_dir)["config_hash"])
    done = completed(out_dir, h, f"curate/embed/{source}")
    if done is not None:
        return done
    shards = list_shards(in_dir)
    stamp = out_dir / "config_hash"
    if stamp.is_file() and stamp.read_text() != h:
        shutil.rmtree(out_dir)  # per-shard files of another config must not be mixed in
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(stamp, h.encode())
    counts: dict[str, int] = {}
    if run_embed and not all(shard_embedded(out_dir, s) for s in shards):
        rank, world = dist_rank_world()
        model, transform = S.load_backbone(e.backbone)
        opts = EmbedOptions(e.batch_size, e.workers, e.device, e.copy_grid, tuple(e.copy_scales), cfg.progress)
        counts = embed_shards(model, transform, shards, out_dir, opts, rank, world)
        log.info("curate/embed/%s: rank %d/%d %s", source, rank, world, counts)
    if not all(shard_embedded(out_dir, s) for s in shards):
        return None  # other ranks are still at work
    info = consolidate(out_dir, shards)
    m = Manifest(f"curate/embed/{source}", h, [lineage_entry(in_dir)], {"emb": "emb.npy", "copy": "copy.npy", "ids": "ids.json"},
                 {"images": info.get("n", 0), "shards": len(shards)}, extra={**info, "backbone": section(cfg, "curate.embed.backbone")})
    m.write(out_dir)
    return m


def run(cfg: DictConfig) -> Manifest:
    """Run the configured curate steps; returns the stage manifest."""
    c = cfg.curate
    steps = list(c.steps)
    bad = [s for s in steps if s not in CURATE_STEPS]
    if bad:
        raise ValueError(f"curate.steps has unknown steps {bad}; known: {list(CURATE_STEPS)}")
    root, ingest = stage_dir(cfg, "curate"), stage_dir(cfg, "ingest")
    sources = {s: ingest / s for s in c.embed.sources if (ingest / s / "manifest.json").is_file()}
    if "pool" not in sources:
        raise FileNotFoundError(f"{ingest / 'pool'} has no manifest: run stage=ingest first")
    emb = {s: _embed_source(cfg, s, d, root / "embed" / s, "embed" in steps) for s, d in sources.items()}
    later = [s for s in steps if s != "embed"]
    if not later or any(m is None for m in emb.values()):
        if later:
            log.warning("curate: embeddings incomplete (other ranks still running?); stopping before %s", later)
        return Manifest("curate/embed", config_hash([m.config_hash for m in emb.values() if m]),
                        counts={f"embed.{s}": m.counts["images"] for s, m in emb.items() if m})
    ctx = S.Context(cfg=cfg, root=root, ingest=ingest, emb={s: root / "embed" / s for s in sources},
                    emb_hash={s: m.config_hash for s, m in emb.items() if m})
    results: dict[str, Manifest] = {}
    for name, fn in (("dedup", S.dedup_step), ("decontaminate", S.decontam_step), ("retrieve", S.retrieve_step),
                     ("write", S.write_step), ("report", S.report_step)):
        folder = root / ("shards" if name == "write" else name)
        if name not in steps:
            try:
                results[name] = read_manifest(folder)
            except FileNotFoundError:
                if name in ("dedup", "decontaminate", "retrieve") and any(s in steps for s in CURATE_STEPS[CURATE_STEPS.index(name) + 1 :]):
                    raise
            continue
        h = fn.hash(ctx, results)  # type: ignore[union-attr]  # attached by curate_steps._step
        m = completed(folder, h, f"curate/{name}")
        if m is None:
            m = fn(ctx, results, folder, h)
            m.write(folder)
        results[name] = m
    return _summary(ctx, emb, results)


def _summary(ctx: S.Context, emb: dict[str, Manifest | None], results: dict[str, Manifest]) -> Manifest:
    counts: dict[str, int] = {f"embed.{s}": m.counts["images"] for s, m in emb.items() if m}
    metrics: dict[str, float] = {}
    for name, m in results.items():
        counts.update({f"{name}.{k}": v for k, v in m.counts.items()})
        metrics.update(m.metrics)
    scores = S.score(ctx, results) if ctx.cfg.curate.score else {}
    metrics.update(scores)
    if scores:
        log.info("curate scores vs ground truth:\n%s", "\n".join(f"  {k:40s} {v:.4f}" for k, v in sorted(scores.items())))
    inputs = [lineage_entry(ctx.ingest / "pool")] + [lineage_entry(ctx.root / "embed" / s) for s in emb]
    summary = Manifest("curate", config_hash([m.config_hash for m in results.values()], ctx.emb_hash), inputs,
                       {n: ("shards" if n == "write" else n) for n in results}, counts,
                       {k: float(v) for k, v in {**counts, **metrics}.items() if not math.isnan(v)})
    summary.extra["scores"] = scores
    summary.write(ctx.root)
    for name in results:
        folder = ctx.root / ("shards" if name == "write" else name)
        tracking.log_artifact(folder / "manifest.json", artifact_path=f"curate/{name}")
    if (ctx.root / "report").is_dir():
        tracking.log_artifact(ctx.root / "report", artifact_path="curate/report")
    if scores:
        (ctx.root / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return summary


__all__ = ["run"]
