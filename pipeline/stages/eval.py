"""Eval stage: what is a backbone worth on labelled domain data, and how many labels does it save?

Outputs (under ``<paths.output_dir>/<eval.folder>``, ``eval`` by default)::

    features/<backbone>-<hash>.npy   frozen features of the whole eval set (cache, always in eval/)
    finetune/<backbone>-...json      one finished fine-tuning run each (cache, always in eval/; resumes)
    report/results.csv               one row per backbone, task, protocol, label fraction, seed, fold
    report/summary.csv               mean, std and confidence interval over folds x seeds
    report/summary.png               every curve with its band, and the headline (read this first)
    report/label_efficiency_<task>_<protocol>.png
    report/patch_heatmaps_<task>_<backbone>.png   patch-level defect protocol (tasks with a normal class)
    report/report.md                 the headline with its interval, protocol checks, tables
    manifest.json

The frozen protocols (kNN, linear probe) use grouped cross-validation over all labelled
images by default (``eval.protocol``); fine-tuning uses the recipe's fixed split.

Every backbone gets an MLflow run nested under the stage's run, with the same
metric names, so backbones compare side by side.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from pipeline.config.eval import EvalConfig
from pipeline.core import tracking
from pipeline.core.manifest import Manifest, config_hash, file_digests, lineage_entry, read_manifest
from pipeline.core.stage import completed, section, stage_dir
from pipeline.evaluation import report
from pipeline.evaluation.backbones import EvalBackbone, resolve_backbones
from pipeline.evaluation.dataset import EvalSet, load_eval_set
from pipeline.evaluation.features import POOLINGS, extract
from pipeline.evaluation.finetune import images_to_uint8
from pipeline.evaluation.folds import Fold, evaluation_folds
from pipeline.evaluation.frozen import frozen_protocols
from pipeline.evaluation.headline import metric_for
from pipeline.evaluation.metrics import METRICS
from pipeline.evaluation.patch_features import extract_with_patches
from pipeline.evaluation.patch_folds import patch_fold_rows, patch_folds
from pipeline.evaluation.protocols import finetune_protocol
from pipeline.evaluation.report_page import PageInfo, write_report

log = logging.getLogger(__name__)


def _tasks(names: list[str] | None, data: EvalSet) -> list[str]:
    primary = data.primary_task()
    wanted = list(data.tasks) if names is None else [primary if n == "primary" else n for n in names]
    unknown = [n for n in wanted if n not in data.tasks]
    if unknown:
        raise ValueError(f"eval tasks {unknown} are not tasks of this recipe; it has {list(data.tasks)}")
    return sorted(dict.fromkeys(wanted), key=lambda n: (n != primary, n))


def _log_backbone(b: EvalBackbone, summary: list[dict[str, Any]]) -> None:
    """Metrics named alike for every backbone: ``<task>.<protocol>.<metric>.p<percent>`` (mean, std),
    and ``<task>.<protocol>.<metric>.curve`` stepped by the number of labels (MLflow's chart x-axis)."""
    flat: dict[str, float] = {}
    steps: dict[int, dict[str, float]] = {}
    for s in summary:
        if s["backbone"] != b.name:
            continue
        base = f"{s['task']}.{s['protocol']}"
        pct = f"p{100 * s['fraction']:g}"
        for m in METRICS:
            if not np.isnan(s[f"{m}_mean"]):
                flat[f"{base}.{m}.{pct}"] = s[f"{m}_mean"]
                flat[f"{base}.{m}.{pct}.std"] = s[f"{m}_std"]
                for end in ("low", "high"):
                    if not np.isnan(s.get(f"{m}_{end}", np.nan)):
                        flat[f"{base}.{m}.{pct}.{end}"] = s[f"{m}_{end}"]
                steps.setdefault(round(s["n_labels"]), {})[f"{base}.{m}.curve"] = s[f"{m}_mean"]
    # Few large batches: one MLflow call per metric is slow on a SQLite store.
    items = list(flat.items())
    for i in range(0, len(items), 500):
        tracking.log_metrics(dict(items[i : i + 500]))
    for step, ms in sorted(steps.items()):
        tracking.log_metrics(ms, step=step)


def lock_folder(cfg: DictConfig) -> Path:
    """The folder this stage writes (``eval.folder``), locked while it runs."""
    return stage_dir(cfg, cfg.eval.folder)


Cell = tuple[str, str, str, float, int, int]


def expected_cells(
    backbones: list[EvalBackbone],
    tasks: list[str],
    ft_tasks: list[str],
    ec: dict[str, Any],
    folds: dict[str, list[Fold]],
) -> set[Cell]:
    """Every (backbone, task, protocol, fraction, seed, fold) the config asks for."""
    frozen = [p for p in ("knn", "linear_probe") if ec[p]["enabled"]]
    ft = ec["finetune"]
    cells = {
        (b.name, t, p, float(f), fo.seed, fo.fold)
        for b in backbones
        for t in tasks
        for p in frozen
        for f in ec["fractions"]
        for fo in folds[t]
    }
    cells |= {
        (b.name, t, "finetune", float(f), int(s), 0)
        for b in backbones
        if b.finetune
        for t in ft_tasks
        for f in (ft["fractions"] or ec["fractions"])
        for s in (ft["seeds"] or ec["seeds"])
    }
    return cells


def check_cells(rows: list[dict[str, Any]], expected: set[Cell]) -> None:
    """Every expected cell has exactly one result, or an error naming the missing ones (no manifest follows)."""
    got = [(r["backbone"], r["task"], r["protocol"], float(r["fraction"]), r["seed"], r["fold"]) for r in rows]
    missing = sorted(expected - set(got))
    repeated = sorted({c for c in got if got.count(c) > 1})
    unexpected = sorted(set(got) - expected)
    if missing or repeated or unexpected:

        def show(cells: list[Cell]) -> str:
            return ", ".join("/".join(map(str, c)) for c in cells[:10]) + (" ..." if len(cells) > 10 else "")

        raise RuntimeError(
            "eval: results do not cover the configured grid once; no manifest written. "
            + "; ".join(
                f"{len(c)} cells {w} (backbone/task/protocol/fraction/seed/fold): {show(c)}"
                for w, c in (("missing", missing), ("repeated", repeated), ("not asked for", unexpected))
                if c
            )
        )


def run(cfg: DictConfig) -> Manifest:
    """Evaluate every configured backbone with kNN, linear probe and fine-tuning; write the report."""
    ec = section(cfg, "eval")
    typed = OmegaConf.to_object(cfg.eval)
    assert isinstance(typed, EvalConfig)
    entries = typed.backbones
    root = stage_dir(cfg, ec["folder"])
    eval_dir = stage_dir(cfg, "ingest", "eval")
    data_manifest = read_manifest(eval_dir)
    if not entries:
        raise ValueError("eval.backbones is empty: nothing to evaluate")
    backbones, notes = resolve_backbones(entries, cfg.seed)
    identity = [(b.name, b.fingerprint, *([repr(b.data_cfg)] if b.data_cfg else [])) for b in backbones]
    h = config_hash({k: v for k, v in ec.items() if k != "folder"}, data_manifest.config_hash, identity, cfg.seed)
    done = completed(root, h, "eval")
    if done is not None:
        return done
    data = load_eval_set(eval_dir, progress=cfg.progress, limit=ec["limit"])
    tasks = _tasks(ec["tasks"], data)
    metric = ec["headline_metric"]
    if metric not in METRICS:
        raise ValueError(f"eval.headline_metric={metric!r}; choose one of {METRICS}")
    if typed.pooling not in POOLINGS:
        raise ValueError(f"eval.pooling={typed.pooling!r}; choose one of {POOLINGS}")
    metric_of = {t: metric_for(metric, data.tasks[t].num_classes) for t in tasks}
    # One fold partition per seed, the same for every backbone (so they compare fold by fold).
    folds = {
        t: [
            f
            for seed in typed.seeds
            for f in evaluation_folds(data.tasks[t].y, data.groups, data.is_test, typed.protocol, typed.folds, seed)
        ]
        for t in tasks
    }
    heldout = None if data.heldout.all() else data.heldout
    pc = typed.patchcore
    patch_tasks = [t for t in tasks if data.tasks[t].normal is not None] if pc.enabled else []
    patch_figs: dict[str, list[str]] = {}
    ft = typed.finetune
    ft_tasks = _tasks(ft.tasks, data) if ft.enabled else []
    optimizer = instantiate(cfg.eval.finetune.optimizer)
    knn = typed.knn if typed.knn.enabled else None
    probe = typed.linear_probe if typed.linear_probe.enabled else None
    # Caches live in eval/ whatever eval.folder is: they are keyed by content hashes, so
    # experiments (the curation ablation, say) reuse the baselines' features and runs.
    feat_dir, ft_dir, rep_dir = stage_dir(cfg, "eval", "features"), stage_dir(cfg, "eval", "finetune"), root / "report"
    resized: dict[tuple[int, str], Any] = {}

    def images_at(size: int, interpolation: str) -> Any:
        if (size, interpolation) not in resized:
            resized[size, interpolation] = images_to_uint8(data.images, size, interpolation)
        return resized[size, interpolation]

    rows: list[dict[str, Any]] = []
    for b in backbones:
        b_rows: list[dict[str, Any]] = []
        with tracking.child_run(
            f"eval:{b.name}",
            params={
                "backbone": b.name,
                "role": b.role,
                "arch": b.arch,
                "weights": b.source,
                "fingerprint": b.fingerprint,
            },
        ):
            tracking.set_tags({"backbone": b.name, "role": b.role})
            feature_args = (data.images, feat_dir, data.manifest_hash)
            fb, patches = ec["feature_batch_size"], None
            if patch_tasks and not b.is_pixels:
                # One forward pass for the pooled and the patch features (pipeline/evaluation/patch_features.py).
                feats, patches = extract_with_patches(b, *feature_args, pc, cfg.seed, fb, cfg.progress, typed.pooling)
            else:
                feats = extract(b, *feature_args, cfg.seed, fb, cfg.progress, typed.pooling)
            for t in tasks:
                b_rows += frozen_protocols(
                    b.name,
                    b.role,
                    feats,
                    data.tasks[t],
                    folds[t],
                    typed.fractions,
                    typed.min_per_class,
                    knn,
                    probe,
                    heldout,
                )
            if patches is not None:
                for t in patch_tasks:
                    png = rep_dir / f"patch_heatmaps_{t}_{b.name}.png"
                    b_rows += patch_fold_rows(b.name, b.role, patches, data.images, data.tasks[t], folds[t], pc, png)
                    patch_figs.setdefault(t, []).append(png.name)
            if b.finetune and ft_tasks:
                bar = tqdm(desc=f"finetune {b.name}", disable=not cfg.progress, unit="run")

                def progress(msg: str, bar: Any = bar) -> None:
                    bar.set_postfix_str(msg)
                    bar.update(1)
                    log.debug(msg)

                for t in ft_tasks:
                    b_rows += finetune_protocol(
                        b,
                        images_at,
                        data.tasks[t],
                        data.is_test,
                        ft.fractions or ec["fractions"],
                        ft.seeds or ec["seeds"],
                        ec["min_per_class"],
                        ft,
                        optimizer,
                        ft_dir,
                        [
                            b.arch,
                            repr(b.spec),
                            b.fingerprint,
                            cfg.seed,
                            data.manifest_hash,
                            *([repr(b.data_cfg)] if b.data_cfg else []),
                            {
                                k: v
                                for k, v in ec["finetune"].items()
                                if k not in ("tasks", "fractions", "seeds", "enabled")
                            },
                        ],
                        progress=progress,
                    )
                bar.close()
            _log_backbone(b, report.summarize(b_rows, typed.confidence))
        rows += b_rows
    patch_cells = {
        (b.name, t, "patchcore", 1.0, f.seed, f.fold)
        for b in backbones
        if not b.is_pixels
        for t in patch_tasks
        for f in patch_folds(folds[t])
    }
    check_cells(rows, expected_cells(backbones, tasks, ft_tasks, ec, folds) | patch_cells)
    summary = report.summarize(rows, typed.confidence)
    roles = {b.name: b.role for b in backbones}
    info = PageInfo(
        len(data.ids), _protocol_sentence(typed, data), _pretraining_sentence(data), notes, typed.confidence
    )
    num_classes = {t: data.tasks[t].num_classes for t in tasks}
    metrics, headline = write_report(rep_dir, rows, summary, roles, tasks, metric_of, num_classes, info)
    if patch_cells:
        with (rep_dir / "report.md").open("a") as fh:
            fh.write("\n" + "\n".join(report.patch_section(summary, patch_figs)) + "\n")
        metrics.update(
            {
                f"{s['task']}.patchcore.{s['backbone']}.auroc": s["auroc_mean"]
                for s in summary
                if s["protocol"] == "patchcore"
            }
        )
    tracking.log_artifact(rep_dir, artifact_path=f"{ec['folder']}/report")
    m = Manifest(
        stage="eval",
        config_hash=h,
        inputs=[lineage_entry(eval_dir)]
        + [
            lineage_entry(Path(b.source).parent)
            for b in backbones
            if (Path(b.source).parent / "manifest.json").is_file()
        ],
        artifacts={
            "report": "report/report.md",
            "summary_figure": "report/summary.png",
            "results": "report/results.csv",
            "summary": "report/summary.csv",
            "features": str(feat_dir),
            "finetune": str(ft_dir),
        },
        counts={"backbones": len(backbones), "runs": len(rows), "eval_images": len(data.ids)},
        metrics=metrics,
        extra={
            "backbones": [{"name": b.name, "role": b.role, "arch": b.arch, "weights": b.source} for b in backbones],
            "skipped": notes,
            "headline": headline,
            "tasks": tasks,
        },
        # A result removed from the report later makes the next run redo the stage instead of skipping it.
        files=file_digests(root, [p for p in rep_dir.iterdir() if p.is_file()]),
    )
    m.write(root)
    tracking.log_artifact(root / "manifest.json", artifact_path=ec["folder"])
    log.info("eval report: %s\n%s", rep_dir / "report.md", "\n".join(headline))
    return m


def _protocol_sentence(ec: EvalConfig, data: EvalSet) -> str:
    pct = f"{100 * ec.confidence:g} %"
    if ec.protocol == "split":
        n_test = int(data.is_test.sum())
        return (
            f"Frozen protocols: the recipe's fixed split ({len(data.ids) - n_test} train, {n_test} test), "
            f"{len(ec.seeds)} label-draw seeds; {pct} intervals over seeds cover the label draws, "
            "not the test set's noise."
        )
    kind = (
        f"stratified group {ec.folds}-fold cross-validation ({len(np.unique(data.groups))} groups: images of one "
        "group are never on both sides)"
        if ec.protocol == "grouped_cv"
        else f"stratified {ec.folds}-fold cross-validation (random folds, no groups)"
    )
    return (
        f"Frozen protocols (kNN, linear probe): {kind} over all labelled images, repeated with {len(ec.seeds)} "
        f"seeds; label fractions are drawn inside each training fold (stratified, nested). Mean over folds x seeds "
        f"with a {pct} interval from the Nadeau-Bengio corrected variance (folds share training data). "
        "Fine-tuning: the recipe's fixed train/test split."
    )


def _pretraining_sentence(data: EvalSet) -> str:
    n, held = len(data.ids), int(data.heldout.sum())
    if held == n:
        return f"Pretraining: none of the {n} evaluation images was in the pretraining pool."
    return (
        f"Pretraining: {n - held} of the {n} evaluation images were in the pretraining pool (the domain backbone "
        f"has seen them, without labels); the tables marked 'held-out images only' score the {held} others alone."
    )
