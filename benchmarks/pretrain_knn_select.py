#!/usr/bin/env python
"""Score pretrain exports (and the same architecture at random init) with kNN on ELPV, for model selection.

Selection never looks at the test split: ``val`` is the mean balanced accuracy of a repeated,
stratified 5-fold cross-validation *inside the eval train split* (the kNN bank of every fold is
the other four folds). ``test`` (train split bank, test split queries, as the stage's monitor) is
printed too, but only the final comparison should read it.

Features: ``cls`` (the [CLS] token after the final norm: what ``num_classes=0`` gives with
``global_pool="token"``), ``patch`` (mean of the patch tokens) and ``cls+patch`` (both, each
L2-normalised, concatenated; DINOv2's linear-probe feature).

``--elpv-all`` scores on all 2,624 ELPV cells of the ``elpv-dataset`` package instead (5-fold CV over
all of them, no test split): the demo's test split has only 76 defective cells, so one balanced
accuracy there carries about +-0.03 of sampling noise; over all cells it is about 2x smaller. The
demo pretrains on some of these cells, without labels, as DINO's kNN on ImageNet uses its own
training images as the bank.

    python benchmarks/pretrain_knn_select.py --eval /work/out/x/elpv_demo/ingest/eval \
        --export run0=/work/out/x/elpv_demo/pretrain/export --random 0 1 2 --size 96
    # all cells, plus a linear probe on cls+patch
    python benchmarks/pretrain_knn_select.py --elpv-all --linear --export run0=... --random 0 1 2 --size 96
    # defect kNN inside each cell type (the type decides most neighbours)
    python benchmarks/pretrain_knn_select.py --elpv-all --by-type --export run0=... --random 0 --size 128
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import RepeatedStratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.evaluation.knn import knn_classify
from pipeline.models.backbone import BackboneSpec, create_backbone
from pipeline.pretrain.augment import eval_transform
from pipeline.pretrain.backbone_init import build_vit
from pipeline.pretrain.knn_monitor import LabelledSet, load_eval_set

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@torch.no_grad()
def token_features(model: torch.nn.Module, images: torch.Tensor, batch: int = 64) -> dict[str, torch.Tensor]:
    model.eval()
    cls, patch = [], []
    for i in range(0, len(images), batch):
        t = model.forward_features(images[i : i + batch])
        cls.append(t[:, 0])
        patch.append(t[:, model.num_prefix_tokens :].mean(1))
    c, p = F.normalize(torch.cat(cls), dim=-1), F.normalize(torch.cat(patch), dim=-1)
    return {"cls": c, "patch": p, "cls+patch": torch.cat([c, p], dim=-1)}


def load_elpv_all(size: int) -> LabelledSet:
    """All ELPV cells as one CV pool (``train`` everywhere), defect = probability >= 0.5 as in the demo."""
    from PIL import Image

    recs = elpv_records()
    tf = eval_transform(size, MEAN, STD)
    imgs = torch.stack([tf(Image.open(r["path"]).convert("RGB")) for r in recs])
    return LabelledSet(imgs, np.ones(len(recs), bool), elpv_labels(recs))


def elpv_labels(recs: list[dict]) -> dict[str, np.ndarray]:
    return {
        "defect": np.array([int(r["prob"] >= 0.5) for r in recs]),
        "type": np.array([int(r["type"] == "poly") for r in recs]),
    }


def cv_bacc(x: np.ndarray, y: np.ndarray, k: int, repeats: int) -> float:
    """Mean kNN balanced accuracy of a repeated stratified 5-fold CV (each fold's bank: the other four)."""
    cv = RepeatedStratifiedKFold(n_splits=5, n_repeats=repeats, random_state=0)
    return float(np.mean([knn_bacc(x[a], y[a], x[b], y[b], k) for a, b in cv.split(x, y)]))


def knn_bacc(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, k: int) -> float:
    pred, _ = knn_classify(xtr, ytr, xte, int(max(ytr.max(), yte.max())) + 1, k=k)
    return float(balanced_accuracy_score(yte, pred))


def scores(feats: torch.Tensor, data, k: int, repeats: int) -> dict[str, dict[str, float]]:
    x = feats.numpy()
    out = {}
    for task, y in data.labels.items():
        tr = np.where(data.train & (y >= 0))[0]
        te = np.where(~data.train & (y >= 0))[0]
        test = knn_bacc(x[tr], y[tr], x[te], y[te], k) if len(te) else float("nan")
        out[task] = {"val": cv_bacc(x[tr], y[tr], k, repeats), "test": test}
    return out


def defect_by_type(x: np.ndarray, data: LabelledSet, k: int, repeats: int) -> dict[str, float]:
    """Defect kNN CV with bank and queries from one cell type: how well a backbone ranks defects
    once the type, which decides most neighbours, is held fixed."""
    y, kind = data.labels["defect"], data.labels["type"]
    out = {}
    for name, t in (("mono", 0), ("poly", 1)):
        sel = np.where(data.train & (y >= 0) & (kind == t))[0]
        out[f"defect.val_{name}"] = cv_bacc(x[sel], y[sel], k, repeats)
    return out


def linear_cv_bacc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Balanced accuracy of a 5-fold CV linear probe (standardised features, class-balanced logistic regression)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced"))
    pred = cross_val_predict(clf, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return float(balanced_accuracy_score(y, pred))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--eval", default="", help="ingest/eval folder")
    p.add_argument("--elpv-all", action="store_true", help="CV over all ELPV cells instead of --eval")
    p.add_argument("--export", nargs="*", default=[], help="name=export_dir")
    p.add_argument("--random", nargs="*", type=int, default=[], help="seeds of random-init baselines")
    p.add_argument("--model", default="conf/pretrain/model/vit_mini.yaml")
    p.add_argument("--model-set", nargs="*", default=[], help="dotlist overrides of the model config (random init)")
    p.add_argument("--size", type=int, nargs="+", default=[96])
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--linear", action="store_true", help="also a 5-fold CV linear probe on cls+patch (train split or all cells)"
    )
    p.add_argument("--by-type", action="store_true", help="also the defect kNN CV inside each cell type (mono, poly)")
    a = p.parse_args()
    if a.by_type and not a.elpv_all:
        p.error("--by-type needs --elpv-all (it reads the package's mono/poly labels)")
    torch.set_num_threads(a.threads)
    rows = []
    for size in a.size:
        data = load_elpv_all(size) if a.elpv_all else load_eval_set(Path(a.eval), size, MEAN, STD)
        models = []
        for s in a.random:
            import lightning.pytorch as pl

            cfg = OmegaConf.merge(OmegaConf.load(a.model), OmegaConf.from_dotlist(a.model_set))
            cfg.pop("defaults", None)
            pl.seed_everything(s, workers=False, verbose=False)
            models.append((f"random_s{s}", build_vit(cfg, size)[0]))
        for e in a.export:
            name, d = e.split("=", 1)
            models.append(
                (
                    name,
                    create_backbone(
                        BackboneSpec(json.loads((Path(d) / "config.json").read_text())["architecture"], weights=d)
                    ),
                )
            )
        for name, m in models:
            for kind, f in token_features(m, data.images).items():
                sc = scores(f, data, a.k, a.repeats)
                row = {
                    "model": name,
                    "size": size,
                    "feature": kind,
                    **{f"{t}.{s}": v[s] for t, v in sc.items() for s in v},
                }
                if a.by_type and kind == "cls":
                    row.update(defect_by_type(f.numpy(), data, a.k, a.repeats))
                if a.linear and kind == "cls+patch":
                    for t, y in data.labels.items():
                        tr = np.where(data.train & (y >= 0))[0]
                        row[f"{t}.linear_val"] = linear_cv_bacc(f.numpy()[tr], y[tr])
                rows.append(row)
                print(json.dumps(row), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
