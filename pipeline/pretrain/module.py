"""The LightningModule: schedules, EMA teacher, last-layer freezing, throughput and loader-wait logging."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch.optim import Optimizer

from pipeline.augment import GPUMultiCrop
from pipeline.pretrain.data import ImageBatch, seed_everything_for
from pipeline.pretrain.l2sp import L2SP
from pipeline.pretrain.methods.base import SSLMethod, StepInputs
from pipeline.pretrain.param_groups import param_groups
from pipeline.pretrain.schedules import Schedules

ScheduleFactory = Callable[[int, int, int], Schedules]  # (total_steps, steps_per_epoch, global_batch) -> Schedules


class PretrainModule(pl.LightningModule):
    """Trains an :class:`SSLMethod` with per-step schedules that are pure functions of the step.

    Every batch re-seeds ``torch``/``numpy``/``random`` from ``(seed, epoch, batch, rank)``
    (masks, drop-path), so a resumed run draws the same random numbers as an
    uninterrupted one without storing RNG state.

    With ``device_augment`` (the ``gpu`` augmentation backend) the loader yields
    :class:`ImageBatch` (uint8 images + a per-batch seed) and the views are made on the
    device after the transfer; the seed comes from the loader's ``(seed, epoch, rank,
    batch)``, so resumed runs make the same views here too.

    Args:
        method: The objective (owns student, teacher, heads, losses).
        optimizer: ``partial`` of an optimizer class, called with parameter groups.
        schedules: Builds the :class:`Schedules` once the run length is known.
        n_global: Global crops per image (the first views of a batch).
        seed: Run seed.
        device_augment: Makes the list of views from a ``uint8 [B, C, H, W]`` batch on the
            device (a :class:`pipeline.augment.GPUMultiCrop`); ``None`` when the loader
            already yields views.
        backbone_lr_scale / layer_decay: The backbone's share of the learning rate
            (:func:`pipeline.pretrain.param_groups.param_groups`).
        l2sp_weight: L2-SP pull of the student backbone towards its weights at construction
            (:class:`pipeline.pretrain.l2sp.L2SP`; 0: off).
    """

    def __init__(
        self,
        method: SSLMethod,
        optimizer: Callable[..., Optimizer],
        schedules: ScheduleFactory,
        n_global: int,
        seed: int = 0,
        device_augment: GPUMultiCrop | None = None,
        backbone_lr_scale: float = 1.0,
        layer_decay: float = 1.0,
        l2sp_weight: float = 0.0,
    ) -> None:
        super().__init__()
        self.method = method
        self.backbone_lr_scale, self.layer_decay = backbone_lr_scale, layer_decay
        bbs = method.backbones()
        self.l2sp = L2SP(bbs[0], l2sp_weight) if l2sp_weight > 0 and bbs else None
        self._optimizer = optimizer
        self._schedule_factory = schedules
        self.n_global = n_global
        self.seed = seed
        self.device_augment = device_augment
        self._aug_seed: int | None = None
        self._aug_s = 0.0  # host time of the last batch's device augmentation (counted as step time)
        self.schedules: Schedules | None = None
        self._t_end: float | None = None
        self._t_start = 0.0
        self._wait = 0.0
        # run totals for the stage manifest: images, compute seconds, loader-wait seconds
        self.perf = {"images": 0.0, "step_s": 0.0, "wait_s": 0.0}

    # ---- optimisation -------------------------------------------------------------------
    def configure_optimizers(self) -> Optimizer:
        t = self.trainer
        # With max_steps set, estimated_stepping_batches answers without setting the loader up,
        # but the per-epoch count and the batch size below need it.
        t.fit_loop.setup_data()
        total = int(t.estimated_stepping_batches)
        per_epoch = max(1, t.num_training_batches // t.accumulate_grad_batches)
        global_batch = self._batch_size * t.world_size * t.accumulate_grad_batches
        self.schedules = self._schedule_factory(total, per_epoch, global_batch)  # type: ignore[arg-type]  # a sized loader: int
        groups = param_groups(self.method, self.backbone_lr_scale, self.layer_decay)
        opt = self._optimizer(groups, lr=self.schedules.learning_rate(0), weight_decay=self.schedules.wd(0))
        self._set_rates(opt, 0)
        return opt

    @property
    def _batch_size(self) -> int:
        loaders = self.trainer.fit_loop._combined_loader  # noqa: SLF001 - no public accessor
        assert loaders is not None  # set up by configure_optimizers
        loader = loaders.flattened[0]  # our ShardLoader
        return int(getattr(getattr(loader, "spec", None), "batch_size", 1))

    def _apply_schedules(self) -> None:
        for opt in self.trainer.optimizers:
            self._set_rates(opt, self.global_step)

    def _set_rates(self, opt: Optimizer, step: int) -> None:
        assert self.schedules is not None
        lr, wd = self.schedules.learning_rate(step), self.schedules.wd(step)
        bb = self.schedules.backbone_factor(step)
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0) * (bb if g.get("backbone", False) else 1.0)
            if g.get("apply_wd", True):
                g["weight_decay"] = wd

    # ---- hooks --------------------------------------------------------------------------
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, ImageBatch):
            if self.device_augment is None:
                raise TypeError("the loader yields decoded images (ImageBatch) but the module has no device_augment")
            self._aug_seed = int(batch.seed)
            return batch.images  # only the uint8 images travel to the device
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self._aug_seed is None:
            return batch
        assert self.device_augment is not None
        t0 = time.perf_counter()
        self.device_augment.gen.manual_seed(self._aug_seed)
        self._aug_seed = None
        views = self.device_augment(batch).views
        if self._trainer is not None:  # true half precision casts inputs before the transfer; views are made after it
            views = self.trainer.precision_plugin.convert_input(views)
        self._aug_s = time.perf_counter() - t0
        return views

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        aug_s, self._aug_s = self._aug_s, 0.0
        self._wait = 0.0 if self._t_end is None else max(0.0, now - aug_s - self._t_end)
        self._t_start = now - aug_s  # the device augmentation is compute, not waiting for the loader
        seed_everything_for(self.seed, self.current_epoch, batch_idx, self.global_rank, 13)
        self._apply_schedules()

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        assert self.schedules is not None
        step = self.global_step
        temp = self.schedules.teacher_temperature(step)
        frozen = self.schedules.backbone_frozen(step)
        loss, parts = self.method.loss(batch, StepInputs(temp, self.n_global, backbone_frozen=frozen))
        if self.l2sp is not None and not frozen:  # a frozen backbone has not moved: the penalty is 0
            pull = self.l2sp(self.method.backbones()[0])
            parts = {**parts, "l2sp": pull.detach()}
            loss = loss + pull
        bs = batch[0].shape[0]
        logs: dict[str, torch.Tensor | float] = {f"train/loss_{k}": v for k, v in parts.items()}
        logs.update({f"diag/{k}": v for k, v in self.method.diagnostics().items()})
        logs.update(
            {
                "train/loss": loss.detach(),
                "sched/lr": self.schedules.learning_rate(step),
                "sched/backbone_lr_factor": self.schedules.backbone_factor(step),
                "sched/wd": self.schedules.wd(step),
            }
        )
        if self.method.has_teacher:
            logs.update({"sched/teacher_temp": temp, "sched/momentum": self.schedules.momentum(step)})
        self.log_dict(logs, batch_size=bs, prog_bar=False)
        self.log("loss", loss.detach(), prog_bar=True, logger=False, batch_size=bs)
        return loss

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        assert self.schedules is not None
        if self.schedules.last_layer_frozen(self.global_step):
            self.method.cancel_last_layer_gradients()

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # EMA right after the student step, before any callback (checkpointing) sees the model
        assert self.schedules is not None
        self.method.update_teacher(self.schedules.momentum(self.global_step))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        step_s = now - self._t_start
        self._t_end = now
        total = step_s + self._wait
        bs = batch[0].shape[0]
        if self._wait > 0 or batch_idx > 0:
            self.perf["images"] += bs * self.trainer.world_size
            self.perf["step_s"] += step_s
            self.perf["wait_s"] += self._wait
        self.log_dict(
            {
                "perf/step_s": step_s,
                "perf/loader_wait_s": self._wait,
                "perf/loader_wait_frac": self._wait / total if total > 0 else 0.0,
                "perf/images_per_s": bs * self.trainer.world_size / total if total > 0 else 0.0,
            },
            batch_size=bs,
        )

    def on_train_epoch_start(self) -> None:
        self._t_end = None  # the first wait of an epoch includes worker start-up; not a loader stall
