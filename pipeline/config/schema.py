"""The top-level config and the small groups every stage shares (paths, stage, tracking).

The YAML files under ``conf/`` are merged onto dataclasses like these (stored by
:mod:`pipeline.config.store`), so a misspelt key or a value of the wrong type fails
when the config is composed, with a message naming the key, long before any work starts.
Each stage's own parameter classes live in ``pipeline/config/<area>.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.config.ingest import IngestConfig
from pipeline.config.lock import LockConfig

STAGE_ORDER = ("ingest", "curate", "pretrain", "eval")


@dataclass
class PathsConfig:
    """Where outputs go.

    Attributes:
        root: Folder for everything the pipeline writes (and the MLflow store).
        output_dir: This recipe's outputs; each stage writes a sub-folder.
    """

    root: str = "${oc.env:PIPELINE_OUTPUT_ROOT,outputs}"
    output_dir: str = "${paths.root}/${data_recipe.name}"


@dataclass
class StageConfig:
    """Which stages run: ``stage=<name>`` picks one option of ``conf/stage``."""

    name: str = "all"
    stages: list[str] = field(default_factory=lambda: list(STAGE_ORDER))


@dataclass
class TrackingConfig:
    """MLflow tracking.

    Attributes:
        enabled: Log runs at all.
        tracking_uri: Local SQLite by default; ``http://host:5000`` for a server.
        experiment: MLflow experiment name.
        artifact_location: Artifact root for experiments this pipeline creates
            (only used with a local store; a server has its own).
        run_name: Parent run name; defaults to the stages run.
    """

    enabled: bool = True
    tracking_uri: str = "sqlite:///${paths.root}/mlflow.db"
    experiment: str = "${data_recipe.name}"
    artifact_location: str | None = "${paths.root}/mlartifacts"
    run_name: str | None = None


@dataclass
class DataRecipeBase:
    """Fields every data recipe has; recipes extend this with their own.

    Attributes:
        name: Recipe name; also names the output folder.
        prepare: Dotted path of the recipe's ``prepare(cfg, out_dir)`` function.
    """

    name: str = "???"
    prepare: str = "???"


@dataclass
class PipelineConfig:
    """The whole config. Groups not typed here carry their own schemas."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    lock: LockConfig = field(default_factory=LockConfig)  # one writer per stage folder (pipeline/core/lock.py)
    data_recipe: Any = None
    curate: Any = None
    pretrain: Any = None
    eval: Any = None
    # Cluster profiles (conf/cluster) are read by `python -m pipeline.cluster.submit`.
    cluster: Any = None
    seed: int = 0
    progress: bool = True
    # glibc keeps freed memory for reuse instead of unmapping it (pipeline/core/malloc.py); CPU steps ~1.3x faster
    reuse_freed_memory: bool = True
