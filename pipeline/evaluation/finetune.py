"""Few-label fine-tuning of the whole backbone (Lightning).

A linear head on the pooled features, everything trained with AdamW (the
backbone at a lower learning rate than the fresh head), cosine decay, flips as
augmentation. Training runs for a number of optimisation steps that grows with
the labelled set (``epochs`` passes) but never falls below ``min_steps``, so a
1 % subset of five images still gets a real optimisation budget.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import cast

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from pipeline.config.eval import FinetuneConfig
from pipeline.evaluation.backbones import EvalBackbone
from pipeline.evaluation.features import preprocessing, resample_filter

log = logging.getLogger(__name__)

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]


def default_optimizer(params: Iterable) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)


class FinetuneModule(L.LightningModule):
    """Backbone + linear head; inputs are uint8 images, normalised here."""

    mean: torch.Tensor  # buffers, registered in __init__
    std: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
        opts: FinetuneConfig,
        total_steps: int,
        optimizer: OptimizerFactory = default_optimizer,
        class_weights: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(int(cast(int, backbone.num_features)), num_classes)  # timm models declare it
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)
        self.opts = opts
        self.total_steps = total_steps
        self.optimizer_factory = optimizer
        self.class_weights: torch.Tensor | None
        self.register_buffer("class_weights", class_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() - self.mean) / self.std
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        if self.opts.flips:
            # Per-sample flips; EL cells (and most inspection images) have no canonical orientation.
            h = torch.rand(len(x), device=x.device) < 0.5
            v = torch.rand(len(x), device=x.device) < 0.5
            x = torch.where(h.view(-1, 1, 1, 1), x.flip(-1), x)
            x = torch.where(v.view(-1, 1, 1, 1), x.flip(-2), x)
        loss = F.cross_entropy(self(x), y, weight=self.class_weights)
        return loss

    def configure_optimizers(self) -> OptimizerLRScheduler:
        groups = [{"params": self.head.parameters()}]
        opt = self.optimizer_factory([*groups, {"params": self.backbone.parameters()}])
        base = opt.param_groups[0]["lr"]
        opt.param_groups[1]["lr"] = base * self.opts.backbone_lr_scale
        warm = max(1, int(self.opts.warmup_fraction * self.total_steps))

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, self.total_steps - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def inverse_frequency_weights(y: np.ndarray, num_classes: int) -> torch.Tensor:
    """``n / (C * n_c)`` per class (sklearn's ``balanced``); a class absent from ``y`` gets weight 0."""
    counts = np.bincount(np.asarray(y), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def images_to_uint8(images: Sequence[Image.Image], size: int, interpolation: str = "bicubic") -> torch.Tensor:
    """Resize once to ``size`` and keep as a uint8 ``(n, 3, size, size)`` tensor (cheap to hold, fast to batch).

    ``interpolation`` is timm's name for the filter (the backbone's data config), as for frozen features.
    """
    resample = resample_filter(interpolation)
    arr = np.stack([np.asarray(im.convert("RGB").resize((size, size), resample)) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


def finetune_and_predict(
    backbone: EvalBackbone,
    x_train: torch.Tensor,
    y_train: np.ndarray,
    x_test: torch.Tensor,
    num_classes: int,
    opts: FinetuneConfig,
    seed: int,
    optimizer: OptimizerFactory = default_optimizer,
) -> tuple[np.ndarray, np.ndarray]:
    """Fine-tune ``backbone`` (fresh from its weights) on ``x_train``; returns test ``(pred, proba)``.

    Args:
        backbone: The backbone under test (built anew, so runs never share state).
        x_train: uint8 images ``(n, 3, s, s)`` from :func:`images_to_uint8`.
        y_train: Class ids ``(n,)``.
        x_test: uint8 test images.
        num_classes: Number of classes.
        opts: Fine-tuning settings.
        seed: Seeds the init (random-init backbones), head, batch order and flips.
        optimizer: Factory taking parameter groups (head first, then backbone).
    """
    for name in ("lightning.pytorch", "lightning.fabric"):
        # Each run builds a Trainer; its banner ("GPU available: ...") would drown the stage's log.
        logging.getLogger(name).setLevel(logging.WARNING)
    L.seed_everything(seed, verbose=False)
    model = backbone.build(seed)
    prep = preprocessing(model, opts.img_size, backbone.preprocessing_overrides())
    steps = opts.steps_for(len(x_train))
    weights = inverse_frequency_weights(y_train, num_classes) if opts.class_weighted else None
    module = FinetuneModule(model, num_classes, prep["mean"], prep["std"], opts, steps, optimizer, weights)
    bs = min(opts.batch_size, len(x_train))
    ds = TensorDataset(x_train, torch.as_tensor(np.asarray(y_train), dtype=torch.long))
    gen = torch.Generator().manual_seed(seed)
    # drop_last avoids a one-image BatchNorm batch; the subset always fills one batch since bs <= n.
    loader = DataLoader(ds, batch_size=bs, shuffle=True, drop_last=True, generator=gen)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*number of training batches.*")
        warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer = L.Trainer(
            max_steps=steps,
            max_epochs=-1,
            accelerator=opts.accelerator,
            devices=1,
            precision=opts.precision,  # type: ignore[arg-type]  # Lightning validates the string
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        trainer.fit(module, loader)
    module.eval()
    device = next(module.parameters()).device
    probs = []
    with torch.no_grad():
        for start in range(0, len(x_test), 128):
            logits = module(x_test[start : start + 128].to(device))
            probs.append(logits.float().softmax(-1).cpu())
    proba = torch.cat(probs).numpy()
    return proba.argmax(1), proba
