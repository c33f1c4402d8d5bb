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

The steps are ``CURATE_STEPS`` (``pipeline.config.curate``), in that order; each
step after ``embed`` is the module of this package with its name, exposing ``STEP``.
This package is the only curate code that sees the Hydra config: it builds the
typed :class:`~pipeline.config.curate.CurateConfig` once and hands it on.
"""

from __future__ import annotations

import importlib
import json
import logging
import math

from omegaconf import DictConfig, OmegaConf

from pipeline.config.curate import CURATE_STEPS, CurateConfig
from pipeline.core import tracking
from pipeline.core.manifest import Manifest, config_hash, lineage_entry, read_manifest
from pipeline.core.stage import completed, stage_dir
from pipeline.stages.curate.context import Context, Step
from pipeline.stages.curate.embed import embed_source
from pipeline.stages.curate.score import score

log = logging.getLogger(__name__)

# Steps whose outputs a later step reads: when they are not run, their earlier outputs must exist.
_READ_LATER = ("dedup", "decontaminate", "retrieve")


def steps() -> list[Step]:
    """The steps after ``embed``, in ``CURATE_STEPS`` order (module ``<name>`` of this package, ``STEP``)."""
    out = []
    for name in CURATE_STEPS[1:]:
        step = importlib.import_module(f"{__name__}.{name}").STEP
        assert isinstance(step, Step) and step.name == name, f"{__name__}.{name}.STEP is not the {name} step"
        out.append(step)
    return out


def options(cfg: DictConfig) -> CurateConfig:
    """The ``curate`` section, typed (validated against the schema even when composed without it)."""
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(CurateConfig), cfg.curate))
    assert isinstance(typed, CurateConfig)
    return typed


def run(cfg: DictConfig) -> Manifest:
    """Run the configured curate steps; returns the stage manifest."""
    c = options(cfg)
    wanted = list(c.steps)
    bad = [s for s in wanted if s not in CURATE_STEPS]
    if bad:
        raise ValueError(f"curate.steps has unknown steps {bad}; known: {list(CURATE_STEPS)}")
    root, ingest = stage_dir(cfg, "curate"), stage_dir(cfg, "ingest")
    sources = {s: ingest / s for s in c.embed.sources if (ingest / s / "manifest.json").is_file()}
    if "pool" not in sources:
        raise FileNotFoundError(f"{ingest / 'pool'} has no manifest: run stage=ingest first")
    run_embed = "embed" in wanted
    emb = {s: embed_source(c.embed, s, d, root / "embed" / s, run_embed, cfg.progress) for s, d in sources.items()}
    later = [s for s in wanted if s != "embed"]
    if not later or any(m is None for m in emb.values()):
        if later:
            log.warning("curate: embeddings incomplete (other ranks still running?); stopping before %s", later)
        return Manifest(
            "curate/embed",
            config_hash([m.config_hash for m in emb.values() if m]),
            counts={f"embed.{s}": m.counts["images"] for s, m in emb.items() if m},
        )
    done = {s: m for s, m in emb.items() if m is not None}
    ctx = Context(
        opts=c,
        seed=int(cfg.seed),
        progress=bool(cfg.progress),
        title=str(cfg.data_recipe.name),
        root=root,
        ingest=ingest,
        emb={s: root / "embed" / s for s in sources},
        emb_hash={s: m.config_hash for s, m in done.items()},
    )
    results: dict[str, Manifest] = {}
    for step in steps():
        folder = root / step.folder
        if step.name not in wanted:
            try:
                results[step.name] = read_manifest(folder)
            except FileNotFoundError:
                later_wanted = CURATE_STEPS[CURATE_STEPS.index(step.name) + 1 :]
                if step.name in _READ_LATER and any(s in wanted for s in later_wanted):
                    raise
            continue
        h = step.hash(ctx, results)
        m = completed(folder, h, f"curate/{step.name}")
        if m is None:
            m = step.run(ctx, results, folder, h)
            m.write(folder)
        results[step.name] = m
    return _summary(ctx, done, results)


def _summary(ctx: Context, emb: dict[str, Manifest], results: dict[str, Manifest]) -> Manifest:
    """The stage manifest (counts and metrics of every step, scores), logged to tracking."""
    counts: dict[str, int] = {f"embed.{s}": m.counts["images"] for s, m in emb.items()}
    metrics: dict[str, float] = {}
    for name, m in results.items():
        counts.update({f"{name}.{k}": v for k, v in m.counts.items()})
        metrics.update(m.metrics)
    scores = score(ctx, results) if ctx.opts.score else {}
    metrics.update(scores)
    if scores:
        log.info(
            "curate scores vs ground truth:\n%s", "\n".join(f"  {k:40s} {v:.4f}" for k, v in sorted(scores.items()))
        )
    inputs = [lineage_entry(ctx.ingest / "pool")] + [lineage_entry(ctx.emb[s]) for s in emb]
    folders = {s.name: s.folder for s in steps() if s.name in results}
    summary = Manifest(
        "curate",
        config_hash([m.config_hash for m in results.values()], ctx.emb_hash),
        inputs,
        folders,
        counts,
        {k: float(v) for k, v in {**counts, **metrics}.items() if not math.isnan(v)},
    )
    summary.extra["scores"] = scores
    summary.write(ctx.root)
    for name, folder in folders.items():
        tracking.log_artifact(ctx.root / folder / "manifest.json", artifact_path=f"curate/{name}")
    if (ctx.root / "report").is_dir():
        tracking.log_artifact(ctx.root / "report", artifact_path="curate/report")
    if scores:
        (ctx.root / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    return summary


__all__ = ["options", "run", "steps"]
