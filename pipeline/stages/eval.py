"""Eval stage: what is a backbone worth on labelled domain data, and how many labels does it save?

Outputs (under ``<paths.output_dir>/<eval.folder>``, ``eval`` by default)::

    features/<backbone>-<hash>.npy   frozen features of the whole eval set (cache, always in eval/)
    finetune/<backbone>-...json      one finished fine-tuning run each (cache, always in eval/; resumes)
    report/results.csv               one row per backbone, task, protocol, label fraction, seed
    report/summary.csv               mean and std over seeds
    report/label_efficiency_<task>_<protocol>.png
    report/patch_heatmaps_<task>_<backbone>.png   patch-level defect protocol (tasks with a normal class)
    report/report.md                 tables and the label-efficiency headline
    manifest.json

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

from pipeline.config.eval import EvalConfig, PatchCoreConfig
from pipeline.core import tracking
from pipeline.core.manifest import Manifest, config_hash, file_digests, lineage_entry, read_manifest
from pipeline.core.stage import completed, section, stage_dir
from pipeline.evaluation import report
from pipeline.evaluation.backbones import EvalBackbone, resolve_backbones
from pipeline.evaluation.dataset import EvalSet, load_eval_set
from pipeline.evaluation.features import extract
from pipeline.evaluation.finetune import images_to_uint8
from pipeline.evaluation.heatmaps import pick_images, plot_heatmaps
from pipeline.evaluation.label_efficiency import efficiency_against_baselines
from pipeline.evaluation.metrics import METRICS
from pipeline.evaluation.patch_features import extract_patches
from pipeline.evaluation.patchcore import patch_protocol, patch_row
from pipeline.evaluation.protocols import finetune_protocol, frozen_protocols, task_splits

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


Cell = tuple[str, str, str, float, int]


def expected_cells(
    backbones: list[EvalBackbone], tasks: list[str], ft_tasks: list[str], ec: dict[str, Any]
) -> set[Cell]:
    """Every (backbone, task, protocol, fraction, seed) the config asks for."""
    frozen = [p for p in ("knn", "linear_probe") if ec[p]["enabled"]]
    ft = ec["finetune"]
    cells = {
        (b.name, t, p, float(f), int(s))
        for b in backbones
        for t in tasks
        for p in frozen
        for f in ec["fractions"]
        for s in ec["seeds"]
    }
    cells |= {
        (b.name, t, "finetune", float(f), int(s))
        for b in backbones
        if b.finetune
        for t in ft_tasks
        for f in (ft["fractions"] or ec["fractions"])
        for s in (ft["seeds"] or ec["seeds"])
    }
    return cells


def check_cells(rows: list[dict[str, Any]], expected: set[Cell]) -> None:
    """Every expected cell has exactly one result, or an error naming the missing ones (no manifest follows)."""
    got = [(r["backbone"], r["task"], r["protocol"], float(r["fraction"]), r["seed"]) for r in rows]
    missing = sorted(expected - set(got))
    repeated = sorted({c for c in got if got.count(c) > 1})
    unexpected = sorted(set(got) - expected)
    if missing or repeated or unexpected:

        def show(cells: list[Cell]) -> str:
            return ", ".join("/".join(map(str, c)) for c in cells[:10]) + (" ..." if len(cells) > 10 else "")

        raise RuntimeError(
            "eval: results do not cover the configured grid once; no manifest written. "
            + "; ".join(
                f"{len(c)} cells {w} (backbone/task/protocol/fraction/seed): {show(c)}"
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

    # Patch-level defect protocol: tasks whose recipe names a normal class, network backbones.
    pc = typed.patchcore
    patch_tasks = [t for t in tasks if data.tasks[t].normal is not None] if pc.enabled else []
    patch_seed = int(ec["seeds"][0])
    patch_figs: dict[str, list[str]] = {}

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
            feats = extract(
                b, data.images, feat_dir, data.manifest_hash, cfg.seed, ec["feature_batch_size"], cfg.progress
            )
            for t in tasks:
                b_rows += frozen_protocols(
                    b,
                    feats,
                    data.tasks[t],
                    data.is_test,
                    ec["fractions"],
                    ec["seeds"],
                    ec["min_per_class"],
                    knn,
                    probe,
                )
            if patch_tasks and not b.is_pixels:
                b_rows += _patch_protocol(
                    b, data, patch_tasks, pc, feat_dir, rep_dir, cfg.seed, patch_seed, cfg.progress, patch_figs
                )
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
            _log_backbone(b, report.summarize(b_rows))
        rows += b_rows
    patch_cells = {(b.name, t, "patchcore", 1.0, patch_seed) for b in backbones if not b.is_pixels for t in patch_tasks}
    check_cells(rows, expected_cells(backbones, tasks, ft_tasks, ec) | patch_cells)
    summary = report.summarize(rows)
    roles = {b.name: b.role for b in backbones}
    metrics, headline = _write_report(rep_dir, rows, summary, roles, tasks, metric, notes, data)
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


def _patch_protocol(
    b: EvalBackbone,
    data: EvalSet,
    tasks: list[str],
    opts: PatchCoreConfig,
    feat_dir: Path,
    rep_dir: Path,
    model_seed: int,
    seed: int,
    progress: bool,
    figures: dict[str, list[str]],
) -> list[dict[str, Any]]:
    """The patch-level defect protocol on the fixed train/test split; heat maps into ``rep_dir``
    (their file names are added to ``figures[task]``)."""
    patches = extract_patches(b, data.images, feat_dir, data.manifest_hash, opts, model_seed, progress)
    rows = []
    for t in tasks:
        task = data.tasks[t]
        assert task.normal is not None
        train_idx, test_idx = task_splits(task, data.is_test)
        m, res = patch_protocol(patches, task.y, task.classes.index(task.normal), train_idx, test_idx, opts, seed)
        rows.append(patch_row(b.name, b.role, t, seed, len(train_idx), m))
        log.info(
            "patchcore %s %s: AUROC %.3f (bank %d patches)", b.name, t, m.get("auroc", float("nan")), res.bank_size
        )
        pick = pick_images(res.scores, res.is_defect, opts.heatmap_top, opts.heatmap_normal)
        png = plot_heatmaps(
            [data.images[res.test_idx[i]] for i in pick],
            res.maps[pick],
            res.scores[pick],
            res.is_defect[pick],
            res.threshold,
            rep_dir / f"patch_heatmaps_{t}_{b.name}.png",
            title=f"{t}: {b.name}, highest-scoring test images, then the calmest normal ones",
        )
        figures.setdefault(t, []).append(png.name)
    return rows


def _write_report(
    rep_dir: Path,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    roles: dict[str, str],
    tasks: list[str],
    metric: str,
    notes: list[str],
    data: EvalSet,
) -> tuple[dict[str, float], list[str]]:
    report.write_csv(rows, rep_dir / "results.csv")
    report.write_csv(summary, rep_dir / "summary.csv")
    metrics: dict[str, float] = {}
    headline: list[str] = []
    has_domain = any(r == "domain" for r in roles.values())
    body = []
    for t in tasks:
        present = {s["protocol"] for s in summary if s["task"] == t}
        for p in [p for p in ("knn", "linear_probe", "finetune") if p in present]:
            png = report.plot_label_efficiency(summary, t, p, metric, rep_dir / f"label_efficiency_{t}_{p}.png")
            eff = efficiency_against_baselines(report.curves(summary, t, p, metric), roles)
            body += [
                f"### {t}: {p}",
                "",
                f"![{t} {p}]({png.name})",
                "",
                report.markdown_table(summary, t, p, metric),
                "",
                *report.efficiency_lines(eff, metric),
                "",
            ]
            for s in summary:
                if s["task"] == t and s["protocol"] == p and s["fraction"] == 1.0:
                    metrics[f"{t}.{p}.{s['backbone']}.{metric}.p100"] = s[f"{metric}_mean"]
            for b, e in eff.items():
                if e.match.fraction is not None:
                    metrics[f"{t}.{p}.{b}.label_fraction_to_match"] = e.match.fraction
                if t == tasks[0] and (roles[b] == "domain" or not has_domain):
                    headline.append(f"{t} / {p}: {e.match.sentence(b, e.reference, metric)}")
    n_train = int((~data.is_test).sum())
    head = [
        "# Label-efficiency report",
        "",
        f"Evaluation set: {len(data.ids)} images ({n_train} train, {len(data.ids) - n_train} test). "
        f"Metric: {metric.replace('_', ' ')}, mean ± std over seeds; label fractions are of the training split, "
        "stratified, at least one example per class.",
        "",
        "## Headline",
        "",
    ]
    if not has_domain:
        head += [
            "No domain backbone was evaluated" + (f": {'; '.join(notes)}" if notes else "") + ".",
            "Baselines against each other:",
            "",
        ]
    head += [f"- {h}" for h in headline] + [""]
    md = "\n".join([*head, "## Results", "", *body])
    (rep_dir / "report.md").write_text(md)
    return metrics, headline
