"""Ingest stage: run the data recipe, then turn each of its sources into shards.

Outputs (under ``<paths.output_dir>``)::

    recipe/manifest.json         what the recipe prepared (sources, tasks, labels)
    ingest/<source>/shard-*.tar  WebDataset shards, one folder per source
    ingest/<source>/records.jsonl  one record per input: accepted/duplicate/rejected
    ingest/<source>/manifest.json  counts, reasons, lineage
    ingest/manifest.json         the stage summary
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig

from data_recipes.contract import RecipeOutput, read_labels
from pipeline.core import tracking
from pipeline.core.manifest import Manifest, config_hash, lineage_entry
from pipeline.core.stage import completed, section, stage_dir
from pipeline.io.ingest import IngestOptions, ingest, input_fingerprint

log = logging.getLogger(__name__)


def prepare_recipe(cfg: DictConfig) -> tuple[RecipeOutput, Path]:
    """Run the recipe's ``prepare`` unless its outputs already match the config.

    A recipe that reads files the user may change (labels, class folders) can
    define ``fingerprint(cfg) -> str`` next to ``prepare``; it joins the hash,
    so such a change re-runs the recipe instead of being skipped.
    """
    folder = stage_dir(cfg, "recipe")
    prepare = get_method(cfg.data_recipe.prepare)
    fingerprint = getattr(sys.modules[prepare.__module__], "fingerprint", None)
    parts: list = [section(cfg, "data_recipe")]
    if fingerprint is not None:
        parts.append(fingerprint(cfg.data_recipe))
    h = config_hash(*parts)
    done = completed(folder, h, "recipe")
    if done is not None:
        return RecipeOutput.from_dict(done.extra["recipe"]), folder
    log.info("recipe %s: preparing sources in %s", cfg.data_recipe.name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = prepare(cfg.data_recipe, folder)
    Manifest(stage="recipe", config_hash=h, extra={"recipe": out.to_dict()}).write(folder)
    return out, folder


def run(cfg: DictConfig) -> Manifest:
    """Ingest every source of the recipe; returns the stage manifest."""
    recipe, recipe_dir = prepare_recipe(cfg)
    root = stage_dir(cfg, "ingest")
    opts = IngestOptions(
        shard_size=cfg.ingest.shard_size,
        workers=cfg.ingest.workers,
        max_pixels=cfg.ingest.max_pixels,
        min_side=cfg.ingest.min_side,
        progress=cfg.progress,
    )
    recipe_hash = lineage_entry(recipe_dir)["config_hash"]
    # The number of workers changes how fast, not what is written.
    knobs = {k: v for k, v in section(cfg, "ingest").items() if k != "workers"}
    labels = read_labels(recipe.labels_csv) if recipe.labels_csv else {}
    counts: dict[str, int] = {}
    metrics: dict[str, float] = {}
    inputs = [lineage_entry(recipe_dir)]
    for source, specs in recipe.sources.items():
        folder = root / source
        # The inputs' fingerprint is in the hash, so files added to a user's
        # folder are ingested on the next run instead of being skipped.
        h = config_hash(knobs, recipe_hash, specs, input_fingerprint(specs))
        m = completed(folder, h, f"ingest/{source}")
        if m is None:
            res = ingest(specs, folder, opts, labels=labels if source == "eval" else None)
            extra: dict = {"specs": specs, "reasons": res.reasons}
            if source == "eval":
                extra["tasks"] = {k: vars(v) for k, v in recipe.tasks.items()}
            if source == "pool" and recipe.ground_truth:
                extra["ground_truth"] = recipe.ground_truth
            m = Manifest(
                stage=f"ingest/{source}",
                config_hash=h,
                inputs=[lineage_entry(recipe_dir)],
                artifacts={"records": "records.jsonl", "shards": "shard-*.tar"},
                counts={**res.counts, "shards": len(res.shards)},
                extra=extra,
            )
            m.write(folder)
            _report(source, m)
        inputs.append(lineage_entry(folder))
        for k, v in m.counts.items():
            counts[f"{source}.{k}"] = v
        for reason, n in m.extra.get("reasons", {}).items():
            metrics[f"{source}.rejected.{reason}"] = n
        tracking.log_artifact(folder / "manifest.json", artifact_path=f"ingest/{source}")
        tracking.log_artifact(folder / "records.jsonl", artifact_path=f"ingest/{source}")
    summary_hash = config_hash([i["config_hash"] for i in inputs])
    done = completed(root, summary_hash, "ingest")
    if done is not None:  # keep the file as it is, so a re-run changes no byte
        return done
    summary = Manifest(
        stage="ingest",
        config_hash=summary_hash,
        inputs=inputs,
        artifacts={s: s for s in recipe.sources},
        counts=counts,
        metrics={k: float(v) for k, v in {**counts, **metrics}.items()},
    )
    summary.write(root)
    return summary


def _report(source: str, m: Manifest) -> None:
    c = m.counts
    log.info(
        "ingest/%s: %d inputs -> %d accepted, %d byte-identical duplicates, %d rejected %s",
        source, c["inputs"], c["accepted"], c["duplicate"], c["rejected"], m.extra.get("reasons", {}),
    )
