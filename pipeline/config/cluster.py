"""Cluster profiles (``conf/cluster/<name>.yaml``): what each Slurm job asks for.

Read by :mod:`pipeline.cluster` (``load_cluster``), which merges a profile onto :class:`ClusterConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hydra.core.config_store import ConfigStore


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


def register(cs: ConfigStore) -> None:
    """Store ``cluster/schema``."""
    cs.store(group="cluster", name="schema", node=ClusterConfig)
