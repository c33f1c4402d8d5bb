"""Typed cluster profiles: ``conf/cluster/<name>.yaml`` merged onto :class:`ClusterConfig`.

Plain YAML checked against these dataclasses (OmegaConf structured merge), so a misspelt
key fails before anything is submitted, naming the key and the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "cluster"


@dataclass
class Resources:
    """What one Slurm job asks for (sbatch flags).

    Attributes:
        partition: ``--partition``; ``None`` for the cluster's default.
        account: ``--account``, where the site charges one.
        qos: ``--qos``.
        nodes: ``--nodes``; >1 for multi-node DDP (pretrain).
        tasks_per_node: ``--ntasks-per-node``: one per GPU for DDP, else 1.
        cpus_per_task: ``--cpus-per-task`` (dataloader workers + 1).
        gpus_per_node: ``--gpus-per-node``; 0 for none.
        mem_gb: ``--mem`` in GB; ``None`` for the partition's default.
        time_min: ``--time`` in minutes.
        requeue: ``--requeue``: Slurm may requeue the job on preemption or node failure.
        signal_delay_s: Seconds of warning before the time limit (USR2, submitit's signal).
        container_image: pyxis/enroot ``srun --container-image`` (a ``.sqsh`` or a registry image).
        container_mounts: ``srun --container-mounts`` (e.g. ``/shared:/shared``).
        setup: Shell lines run before the job (``module load ...``, ``export ...``).
        additional: More sbatch flags, e.g. ``{constraint: a100, mail-type: FAIL}``.
    """

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_gb: int | None = None
    time_min: int = 60
    requeue: bool = True
    signal_delay_s: int = 120
    container_image: str | None = None
    container_mounts: str | None = None
    setup: list[str] = field(default_factory=list)
    additional: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClusterConfig:
    """A cluster profile.

    Attributes:
        name: The profile's name.
        job: Resources of every job unless ``stages`` says otherwise.
        stages: Per-job overrides of ``job``, keyed ``ingest``, ``curate_embed`` (each array
            task), ``curate`` (the merge + dedup/decontaminate/retrieve/write/report job),
            ``pretrain``, ``eval``.
        embed_tasks: Tasks of the curate embedding array; each embeds shards ``rank::tasks``.
        array_parallelism: At most this many array tasks run at once (``--array=...%N``).
        max_num_timeout: Times submitit requeues a job that hit its time limit.
        folder: Where submitit keeps job scripts and logs; ``None``: ``<paths.root>/slurm``.
        wait: Block until every job ends and fail if one failed (tests, scripts).
    """

    name: str = "???"
    job: Resources = field(default_factory=Resources)
    stages: dict[str, Any] = field(default_factory=dict)
    embed_tasks: int = 4
    array_parallelism: int = 4
    max_num_timeout: int = 3
    folder: str | None = None
    wait: bool = False


JOB_KINDS = ("ingest", "curate_embed", "curate", "pretrain", "eval")


def load_cluster(name: str, overrides: list[str] | None = None) -> DictConfig:
    """``conf/cluster/<name>.yaml`` (or a path) checked against :class:`ClusterConfig`.

    Args:
        name: A profile name under ``conf/cluster`` or a path to a YAML file.
        overrides: ``key=value`` dot-list overrides (``job.partition=gpu``).

    Raises:
        FileNotFoundError: naming the known profiles.
        ValueError: naming the bad key and the file.
    """
    path = Path(name) if name.endswith((".yaml", ".yml")) else CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"cluster profile {name!r} not found ({path}); known: {known}")
    try:
        raw = OmegaConf.load(path)
        if isinstance(raw, DictConfig) and "defaults" in raw:
            # The Hydra defaults list (`- schema`) is for composing with run.py's config.
            raw = OmegaConf.masked_copy(raw, [str(k) for k in raw if k != "defaults"])
        cfg = OmegaConf.merge(OmegaConf.structured(ClusterConfig), raw)
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))
        for kind, extra in cfg.stages.items():
            if kind not in JOB_KINDS:
                raise ValueError(f"stages.{kind}: unknown job kind; known: {list(JOB_KINDS)}")
            OmegaConf.merge(OmegaConf.structured(Resources), extra)
    except OmegaConfBaseException as e:
        raise ValueError(f"{path}: {e}") from e
    if cfg.embed_tasks < 1 or cfg.array_parallelism < 1:
        raise ValueError(f"{path}: embed_tasks and array_parallelism must be >= 1")
    assert isinstance(cfg, DictConfig)
    return cfg


def resources_for(cluster: DictConfig, kind: str) -> Resources:
    """The resources of one job kind: ``job`` merged with ``stages.<kind>``."""
    merged = OmegaConf.merge(OmegaConf.structured(Resources), cluster.job, cluster.stages.get(kind, {}))
    out = OmegaConf.to_object(merged)
    assert isinstance(out, Resources)
    return out
