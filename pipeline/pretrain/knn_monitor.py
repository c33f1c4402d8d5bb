"""Online kNN: balanced accuracy of a weighted kNN on frozen features of the labelled eval split."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from pipeline.augment.pil_multicrop import eval_transform
from pipeline.core.manifest import read_manifest
from pipeline.io.shards import image_of, iter_samples, list_shards

if TYPE_CHECKING:
    from pipeline.pretrain.module import PretrainModule

log = logging.getLogger(__name__)


@dataclass
class LabelledSet:
    """Eval images as tensors plus integer labels per task; ``train`` marks the kNN bank."""

    images: torch.Tensor
    train: np.ndarray
    labels: dict[str, np.ndarray]


def load_eval_set(folder: Path, size: int, mean: Any, std: Any, max_images: int = 0) -> LabelledSet:
    """Decode ``ingest/eval`` once at ``size`` px; tasks and classes come from its manifest."""
    tasks = read_manifest(folder).extra.get("tasks", {})
    if not tasks:
        raise ValueError(f"{folder}/manifest.json lists no tasks (extra.tasks); the kNN monitor needs labels")
    tf = eval_transform(size, mean, std)
    imgs, train = [], []
    labels: dict[str, list[int]] = {t: [] for t in tasks}
    for s in iter_samples(list_shards(folder)):
        lab = s["meta"].get("labels") or {}
        if lab.get("split") not in ("train", "test"):
            continue
        imgs.append(tf(image_of(s)))
        train.append(lab["split"] == "train")
        for t, spec in tasks.items():
            v = lab.get(spec.get("column", t))
            labels[t].append(spec["classes"].index(v) if v in spec["classes"] else -1)
        if max_images and len(imgs) >= max_images:
            break
    if not imgs:
        raise ValueError(f"no labelled train/test images in {folder}")
    return LabelledSet(torch.stack(imgs), np.array(train), {t: np.array(v) for t, v in labels.items()})


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """L2-normalised pooled features (what ``create_backbone(..., num_classes=0)`` gives the eval stage)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i : i + batch_size].to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out.append(F.normalize(model(x).float(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out)


def knn_predict(
    bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, k: int, temperature: float = 0.07
) -> torch.Tensor:
    """DINO's weighted kNN: votes ``exp(cos / T)`` of the ``k`` most similar bank features."""
    n_cls = int(bank_labels.max()) + 1
    sim = query @ bank.T
    k = min(k, bank.shape[0])
    w, idx = sim.topk(k, dim=1)
    votes = torch.zeros(query.shape[0], n_cls)
    votes.scatter_add_(1, bank_labels[idx], (w / temperature).exp())
    return votes.argmax(1)


def knn_scores(feats: torch.Tensor, data: LabelledSet, k: int) -> dict[str, float]:
    """Balanced accuracy per task (test split queried against the train split)."""
    out = {}
    for task, y in data.labels.items():
        tr = data.train & (y >= 0)
        te = ~data.train & (y >= 0)
        if tr.sum() == 0 or te.sum() == 0:
            continue
        pred = knn_predict(feats[tr], torch.as_tensor(y[tr]), feats[te], k)
        out[task] = float(balanced_accuracy_score(y[te], pred.numpy()))
    return out


class KNNMonitor(pl.Callback):
    """kNN balanced accuracy of the exported backbone at start, every ``every`` epochs and at the end.

    Logged as ``knn/<task>``; ``history`` keeps ``(step, scores)`` for the stage manifest.
    """

    def __init__(self, data: LabelledSet, every: int, k: int = 20) -> None:
        self.data, self.every, self.k = data, every, k
        self.history: list[tuple[int, dict[str, float]]] = []

    def _run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        feats = embed(cast("PretrainModule", pl_module).method.export_backbone(), self.data.images)
        scores = knn_scores(feats, self.data, self.k)
        step = trainer.global_step
        if self.history and self.history[-1][0] == step:
            return
        self.history.append((step, scores))
        if trainer.is_global_zero:
            log.info("kNN at step %d: %s", step, {t: round(v, 4) for t, v in scores.items()})
            for lg in trainer.loggers:
                lg.log_metrics({f"knn/{t}": v for t, v in scores.items()}, step=step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == 0:
            self._run(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every > 0 and (trainer.current_epoch + 1) % self.every == 0:
            self._run(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._run(trainer, pl_module)
