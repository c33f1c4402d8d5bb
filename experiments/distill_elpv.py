#!/usr/bin/env python
"""Defect AUROC on all 2,624 ELPV cells of backbones before and after distillation (one-off study).

Each backbone embeds every cell of the ``elpv-dataset`` package (the whole cell resized to
``--size``, the backbone's own normalisation: timm's, or the export's ``pretrained_cfg``), then
two probes score the defect label (probability >= 0.5, as in the demo) with a grouped 5-fold CV
whose groups are contiguous blocks of 64 cells (neighbouring cells of the package come from the
same modules, so a random split would put near-copies on both sides):

* ``linear``: standardised features, class-balanced logistic regression (C=0.1), AUROC of its scores;
* ``knn``: k=20 cosine neighbours from the other folds, DINO's ``exp(cos/0.07)`` votes, AUROC of the
  defect vote share.

Per backbone it prints the mean and the standard deviation over the 5 folds.

``--step-time N`` instead times N training steps of the distillation method (ImageNet Lite2 teacher,
Lite0 student from ImageNet weights, two global crops of ``--size`` px per image, ``--batch`` images,
AdamW; random views, so no loader) and prints the images per second of steps 2..N.

    PYTHONPATH=$PWD python experiments/distill_elpv.py --size 128 \\
        --backbone lite2=efficientnet_lite2:efficientnet_lite2_pypi \\
        --backbone lite0=efficientnet_lite0:efficientnet_lite0_pypi \\
        --backbone distilled=-:/path/to/pretrain/export --out /tmp/distill_elpv.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.config.models import BackboneConfig
from pipeline.evaluation.features import network_features, preprocessing
from pipeline.models.backbone import create_backbone, read_export

GROUP = 64


def folds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    groups = np.arange(n) // GROUP
    return list(GroupKFold(n_splits=5).split(np.zeros(n), groups=groups))


def linear_auroc(x: np.ndarray, y: np.ndarray, split: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    out = []
    for tr, te in split:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000, class_weight="balanced"))
        clf.fit(x[tr], y[tr])
        out.append(float(roc_auc_score(y[te], clf.decision_function(x[te]))))
    return out


def knn_auroc(x: np.ndarray, y: np.ndarray, split: list[tuple[np.ndarray, np.ndarray]], k: int = 20) -> list[float]:
    z = torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1)
    out = []
    for tr, te in split:
        sim = z[te] @ z[tr].T
        top, idx = sim.topk(k, dim=1)
        w = (top / 0.07).exp()
        score = (w * torch.as_tensor(y[tr])[idx].float()).sum(1) / w.sum(1)
        out.append(float(roc_auc_score(y[te], score.numpy())))
    return out


def backbone(spec: str) -> tuple[torch.nn.Module, dict]:
    """``arch:weights`` (``-:<export folder>`` for an export) -> model and its preprocessing overrides."""
    arch, weights = spec.split(":", 1)
    if arch == "-":
        export = read_export(weights)
        model = create_backbone(BackboneConfig(export["architecture"], weights=weights))
        return model, export["pretrained_cfg"]
    return create_backbone(BackboneConfig(arch, weights=weights or None)), {}


def step_time(steps: int, size: int, batch: int) -> dict:
    from pipeline.config.augment import AugmentConfig
    from pipeline.config.pretrain import DistillationConfig
    from pipeline.pretrain.methods import StepInputs
    from pipeline.pretrain.methods.teacher_distillation import build_distillation

    student = create_backbone(BackboneConfig("efficientnet_lite0", weights="efficientnet_lite0_pypi"))
    spec = DistillationConfig(teacher=BackboneConfig("efficientnet_lite2", weights="efficientnet_lite2_pypi"))
    aug = AugmentConfig(global_size=size, local_crops=0, mean=(0.5,) * 3, std=(0.5,) * 3)
    method = build_distillation(spec, student, aug, n_images=2613).train()
    opt = torch.optim.AdamW([p for m in method.trainable_modules() for p in m.parameters()], lr=1e-4)
    views = [torch.randn(batch, 3, size, size) for _ in range(2)]
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss, _ = method.loss(views, StepInputs(teacher_temp=0.0, n_global=2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
        print(f"step {len(times)}: {times[-1]:.2f} s", flush=True)
    per_step = times[1:]  # the first step sets up oneDNN's kernels
    return {"size": size, "batch": batch, "steps": len(per_step), "images_per_s": batch * len(per_step) / sum(per_step),
            "step_s": per_step}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", action="append", default=[], help="name=arch:weights")
    p.add_argument("--step-time", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.step_time:
        print(json.dumps(step_time(a.step_time, a.size, a.batch)))
        return
    recs = elpv_records()
    images = [Image.open(r["path"]).convert("RGB") for r in recs]
    y = np.array([int(r["prob"] >= 0.5) for r in recs])
    split = folds(len(recs))
    rows = []
    for item in a.backbone:
        name, spec = item.split("=", 1)
        model, overrides = backbone(spec)
        prep = preprocessing(model, a.size, {k: v for k, v in overrides.items() if k in ("mean", "std")})
        prep["size"] = a.size
        t0 = time.perf_counter()
        x = network_features(model, images, prep)
        secs = time.perf_counter() - t0
        lin, knn = linear_auroc(x, y, split), knn_auroc(x, y, split)
        row = {
            "backbone": name,
            "spec": spec,
            "size": a.size,
            "mean_std": [prep["mean"], prep["std"]],
            "linear_auroc": float(np.mean(lin)),
            "linear_auroc_sd": float(np.std(lin)),
            "knn_auroc": float(np.mean(knn)),
            "knn_auroc_sd": float(np.std(knn)),
            "linear_folds": lin,
            "knn_folds": knn,
            "embed_images_per_s": len(images) / secs,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    if a.out:
        Path(a.out).write_text(json.dumps({"cells": len(recs), "defect_rate": float(y.mean()), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
