"""Ingest stage: run the data recipe, then turn each of its sources into shards.

Outputs (under ``<paths.output_dir>``)::

    recipe/manifest.json         what the recipe prepared (sources, tasks, labels)
    ingest/<source>/shard-*.tar  WebDataset shards, one folder per source
    ingest/<source>/records.jsonl  one record per input: accepted/duplicate/rejected
    ingest/<source>/manifest.json  counts, reasons, lineage
    ingest/manifest.json         the stage summary
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from data_recipes.contract import RecipeOutput, read_labels
from pipeline.config.ingest import IngestConfig
from pipeline.core import tracking
from pipeline.core.manifest import Manifest, config_hash, file_digests, lineage_entry, read_manifest
from pipeline.core.stage import completed, section, stage_dir
from pipeline.io.ingest import fingerprint, ingest
from pipeline.io.shards import records_path
from pipeline.io.sources import InputRef, iter_all

log = logging.getLogger(__name__)


def prepare_recipe(cfg: DictConfig) -> tuple[RecipeOutput, Path, dict[str, list[InputRef]]]:
    """Run the recipe's ``prepare`` unless its outputs already match the config.

    A recipe that reads files the user may change (labels, class folders) can
    define ``fingerprint(cfg) -> str`` next to ``prepare``; it joins the hash,
    so such a change re-runs the recipe instead of being skipped.

    The manifest counts the inputs of every source (``<source>.inputs``), the
    number ingest must account for. A finished recipe whose sources no longer
    hold that many inputs is prepared again (a recipe that generates its
    sources rewrites them; one that points at a user's folders records the new
    count). Returns the recipe, its folder and each source's inputs.
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
        recipe = RecipeOutput.from_dict(done.extra["recipe"])
        refs = _enumerate(recipe)
        if _source_counts(refs) == done.counts:
            return recipe, folder, refs
        log.warning(
            "recipe: its sources now hold %s inputs, the manifest says %s; preparing them again",
            _source_counts(refs),
            done.counts,
        )
    log.info("recipe %s: preparing sources in %s", cfg.data_recipe.name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = prepare(cfg.data_recipe, folder)
    refs = _enumerate(out)
    Manifest(stage="recipe", config_hash=h, counts=_source_counts(refs), extra={"recipe": out.to_dict()}).write(folder)
    return out, folder, refs


def _enumerate(recipe: RecipeOutput) -> dict[str, list[InputRef]]:
    return {source: list(iter_all(specs)) for source, specs in recipe.sources.items()}


def _source_counts(refs: dict[str, list[InputRef]]) -> dict[str, int]:
    return {f"{source}.inputs": len(r) for source, r in refs.items()}


def check_records(source: str, refs: list[InputRef], records: Path, expected: int | None) -> None:
    """Every input the recipe listed has exactly one record, or an error naming what is missing.

    Args:
        source: Source name, for messages.
        refs: The inputs as enumerated before this ingest started (the files
            may have changed since: then the records differ from them).
        records: The merged ``records.jsonl``.
        expected: The recipe manifest's count for the source (``None``: not recorded).

    Raises:
        RuntimeError: naming missing, unexpected or repeated keys; no manifest may follow.
    """
    with records.open() as fh:
        keys = [json.loads(line)["key"] for line in fh if line.strip()]
    want = [r.key for r in refs]
    problems = []
    if expected is not None and expected != len(want):
        problems.append(f"the recipe listed {expected} inputs, ingest found {len(want)}")
    missing = sorted(set(want) - set(keys))
    extra = sorted(set(keys) - set(want))
    repeated = sorted(k for k, n in Counter(keys).items() if n > 1)
    for what, items in (("have no record", missing), ("are not inputs", extra), ("have several records", repeated)):
        if items:
            problems.append(f"{len(items)} keys {what}: {', '.join(items[:10])}{' ...' if len(items) > 10 else ''}")
    if problems:
        raise RuntimeError(
            f"ingest/{source}: {records} does not account for every input once; no manifest written. "
            + "; ".join(problems)
            + ". Another run may have rewritten the recipe's folders meanwhile; re-run to redo this source."
        )


def run(cfg: DictConfig) -> Manifest:
    """Ingest every source of the recipe; returns the stage manifest."""
    recipe, recipe_dir, refs_of = prepare_recipe(cfg)
    recipe_counts = read_manifest(recipe_dir).counts
    root = stage_dir(cfg, "ingest")
    opts = OmegaConf.to_object(cfg.ingest)
    assert isinstance(opts, IngestConfig)
    recipe_hash = lineage_entry(recipe_dir)["config_hash"]
    # The number of workers changes how fast, not what is written.
    knobs = {k: v for k, v in section(cfg, "ingest").items() if k != "workers"}
    labels = read_labels(recipe.labels_csv) if recipe.labels_csv else {}
    counts: dict[str, int] = {}
    metrics: dict[str, float] = {}
    inputs = [lineage_entry(recipe_dir)]
    for source, specs in recipe.sources.items():
        folder = root / source
        refs = refs_of[source]
        # The inputs' fingerprint is in the hash, so files added to a user's
        # folder are ingested on the next run instead of being skipped.
        h = config_hash(knobs, recipe_hash, specs, fingerprint(refs))
        m = completed(folder, h, f"ingest/{source}")
        if m is None:
            res = ingest(specs, folder, opts, labels=labels if source == "eval" else None, progress=cfg.progress)
            check_records(source, refs, res.records, recipe_counts.get(f"{source}.inputs"))
            extra: dict = {"specs": specs, "reasons": res.reasons}
            if source == "eval":
                extra["tasks"] = {k: vars(v) for k, v in recipe.tasks.items()}
            if source == "pool" and recipe.ground_truth:
                extra["ground_truth"] = recipe.ground_truth
            # Shards by size only: a skip must not read the whole pool again; record files also by SHA-256.
            digests = {
                **file_digests(folder, res.shards, max_bytes=0),
                **file_digests(folder, [res.records, *map(records_path, res.shards)]),
            }
            m = Manifest(
                stage=f"ingest/{source}",
                config_hash=h,
                inputs=[lineage_entry(recipe_dir)],
                artifacts={"records": "records.jsonl", "shards": "shard-*.tar"},
                counts={**res.counts, "shards": len(res.shards)},
                extra=extra,
                files=dict(sorted(digests.items())),
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
        source,
        c["inputs"],
        c["accepted"],
        c["duplicate"],
        c["rejected"],
        m.extra.get("reasons", {}),
    )
